import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, format_size, parse_size


@pytest.mark.parametrize("text,expected", [
    ("1048576", 1048576), (4096, 4096), ("10G", 10 << 30), ("10GiB", 10 << 30), ("512M", 512 << 20),
    ("512 MiB", 512 << 20), ("1.5G", 3 << 29), ("1GB", 10 ** 9), ("2 kb", 2000), ("7b", 7), ("1T", 1 << 40),
])
def test_parse_size_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "ten", "10X", "10 GiBs", "-1G", -5, "1.5", "0.1K", True, None, "10iB"])
def test_parse_size_rejects(bad):
    with pytest.raises(SizeError, match="^root size: "):
        parse_size(bad, what="root size")


def test_format_size():
    assert format_size(10 << 30) == "10 GiB"
    assert format_size(3 << 19) == "1.5 MiB"
    assert format_size(512) == "512 B"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_not_a_number_is_a_clear_size_error(value):
    with pytest.raises(SizeError, match="a size in bytes must be a whole, non-negative number"):
        parse_size(value)


def test_long_digit_strings_are_exact():
    assert parse_size("9" * 40) == int("9" * 40)
    with pytest.raises(SizeError, match="is not a whole number of bytes"):
        parse_size("1.0000000000000000001K")
# --- issue 10 item 21: every unit, exactly; fractions and the messages that name the rule ---------------------


@pytest.mark.parametrize("unit,factor", [
    ("", 1), ("b", 1), ("B", 1),
    ("K", 1024), ("M", 1024 ** 2), ("G", 1024 ** 3), ("T", 1024 ** 4), ("P", 1024 ** 5),
    ("KiB", 1024), ("MiB", 1024 ** 2), ("GiB", 1024 ** 3), ("TiB", 1024 ** 4), ("PiB", 1024 ** 5),
    ("k", 1024), ("m", 1024 ** 2), ("g", 1024 ** 3), ("t", 1024 ** 4), ("p", 1024 ** 5), ("pib", 1024 ** 5),
    ("KB", 10 ** 3), ("MB", 10 ** 6), ("GB", 10 ** 9), ("TB", 10 ** 12), ("PB", 10 ** 15),
    ("kb", 10 ** 3), ("Mb", 10 ** 6), ("gB", 10 ** 9), ("tb", 10 ** 12), ("pb", 10 ** 15),
])
def test_every_unit_has_its_exact_factor(unit, factor):
    assert parse_size("3" + unit) == 3 * factor
    assert parse_size(" 3 %s " % unit) == 3 * factor


def test_the_p_unit_is_a_pebibyte_and_pb_a_petabyte():
    assert parse_size("1P") == parse_size("1PiB") == 1125899906842624
    assert parse_size("1PB") == 1000000000000000
    assert parse_size("2P") == parse_size("2048T")


@pytest.mark.parametrize("text,expected", [
    ("1.5K", 1536), ("0.5K", 512), ("2.25M", 2359296), ("1.5KB", 1500), ("0.001KB", 1), ("2.0", 2), ("0", 0),
    ("1.5P", 3 << 49),
])
def test_fractional_sizes_that_are_whole_bytes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["1.5", "0.1K", "1.0001K", "0.0001KB", "2.5b", "0.3"])
def test_fractional_byte_counts_are_refused(bad):
    with pytest.raises(SizeError, match=r"^disk size: '%s' is not a whole number of bytes$" % bad.replace(".", r"\.")):
        parse_size(bad, what="disk size")


def test_numbers_as_numbers():
    assert parse_size(0) == 0
    assert parse_size(1) == 1
    assert parse_size(2.0) == 2 and isinstance(parse_size(2.0), int)
    assert parse_size(0.0) == 0
    with pytest.raises(SizeError, match=r"^memory: a size cannot be negative \(-1\)$"):
        parse_size(-1, what="memory")
    for bad in (1.5, -1.0, -0.5, 0.25):
        with pytest.raises(SizeError, match=r"^memory: a size in bytes must be a whole, non-negative number \(%s\)$"
                           % repr(bad).replace(".", r"\.")):
            parse_size(bad, what="memory")


@pytest.mark.parametrize("bad", [None, True, False])
def test_non_sizes_name_what_a_size_looks_like(bad):
    with pytest.raises(SizeError, match=r"^swap: expected a size such as 10G, 512M or a number of bytes, got %r$"
                       % bad):
        parse_size(bad, what="swap")


def test_the_default_name_of_the_value_is_size():
    with pytest.raises(SizeError, match=r"^size: cannot parse 'x'"):
        parse_size("x")
    with pytest.raises(SizeError, match=r"^size: unknown unit"):
        parse_size("1Q")


@pytest.mark.parametrize("bad", ["ten", "1..5G", ".5G", "5.G", "1e3", "1 0G", "-1G", "G", "10 G B", "0x10"])
def test_unparseable_sizes_say_the_accepted_form(bad):
    with pytest.raises(SizeError, match=r"^root: cannot parse %r; use a number with an optional unit: K, M, G, T "
                       r"\(binary\), KiB\.\.TiB \(binary\) or KB\.\.TB \(decimal\)$" % bad):
        parse_size(bad, what="root")


@pytest.mark.parametrize("bad,unit", [("10X", "X"), ("10 GiBs", "GiBs"), ("10iB", "iB"), ("1EB", "EB"),
                                      ("1E", "E"), ("1EiB", "EiB"), ("1Bi", "Bi"), ("1KiBB", "KiBB")])
def test_unknown_units_are_named(bad, unit):
    with pytest.raises(SizeError, match=r"^root: unknown unit %r in %r; use K, M, G, T, P \(binary\), KiB\.\.PiB or "
                       r"KB\.\.PB$" % (unit, bad)):
        parse_size(bad, what="root")


@pytest.mark.parametrize("num_bytes,text", [
    (0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1 KiB"), (1025, "1.0 KiB"), (1536, "1.5 KiB"),
    (1024 ** 2 - 1, "1024.0 KiB"), (1024 ** 2, "1 MiB"), (5 << 30, "5 GiB"), (3 << 39, "1.5 TiB"),
    (1024 ** 4, "1 TiB"), (1024 ** 5, "1024 TiB"), (3 << 50, "3072 TiB"), (-2048, "-2 KiB"),
])
def test_format_size_renders_binary_units(num_bytes, text):
    assert format_size(num_bytes) == text
