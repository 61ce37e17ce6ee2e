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
    with pytest.raises(SizeError) as err:
        parse_size(bad, what="root size")
    assert "root size" in str(err.value)


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
