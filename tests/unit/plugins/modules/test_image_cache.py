"""image_cache: whatever the arguments, a result or a clean message (issue 10 item 11)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import MODULE_SPEC
from tests.support.module_fuzz import assert_clean, module_arguments, run_main

SHA256_OF_ZEROS_1M = "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"


def _special(sandbox):
    sizes = st.sampled_from(["1M", "1T", "0", "-1", "20T", "1.5M", "1P", "lots", "1000001", "8M\n", str(1 << 70)])
    return {"url": sandbox.urls(), "max_virtual_size": sizes,
            "checksum": st.sampled_from(["sha256:" + SHA256_OF_ZEROS_1M, "sha256:" + "0" * 64, SHA256_OF_ZEROS_1M,
                                         "md5:abc", "sha256:", "sha256:http://127.0.0.1:9/SHA256SUMS", "", "x:y:z"]),
            "min_unused_age": st.sampled_from(["0", "24h", "-1h", "1y", "abc", "1e999s", "5", "90m", "1d\n"]),
            "headers": st.dictionaries(st.sampled_from(["X-A", "", "Bad\nName", "Host"]),
                                       st.sampled_from(["v", "", "a\r\nb"]), max_size=2)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_arguments_end_in_a_result_or_a_clean_message(sandbox, data):
    spec = MODULE_SPEC.argument_spec
    args = data.draw(module_arguments(spec, sandbox, _special(sandbox), key="url"), label="args")
    assert_clean(run_main("image_cache", args, sandbox, check=data.draw(st.booleans(), label="check")))


def test_a_tiny_image_is_cached_and_a_rerun_is_unchanged(sandbox):
    """The harness itself runs the module for real: a raw file cached, then the same call changes nothing."""
    args = {"uri": sandbox.uri, "instances_path": sandbox.instances, "url": "file://" + sandbox.image,
            "checksum": "sha256:" + SHA256_OF_ZEROS_1M, "format": "raw"}
    first = run_main("image_cache", args, sandbox, check=False)
    again = run_main("image_cache", args, sandbox, check=False)
    assert not first.get("failed"), first
    assert first["changed"] is True and again["changed"] is False, (first, again)
