"""The guest module's spec: a password in an image part's URL joins the module's no_log values."""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._guest.spec import hide_image_url_passwords


class FakeModule:
    def __init__(self, params):
        self.params = params
        self.no_log_values = set()


def test_passwords_in_each_image_part_are_hidden_and_other_parts_are_left_alone():
    module = FakeModule({"name": None, "image": None, "items": [
        {"name": "a", "image": {"url": "https://me:s3cr%40t@images.example.com/a.qcow2"}},
        {"name": "b", "image": {"url": "https://images.example.com/b.qcow2",
                                "checksum": "sha256:https://u:sumpass@images.example.com/SHA256SUMS"}},
        {"name": "c", "image": None, "xml": {"url": "https://x:notanimage@example.com/"}}]})
    hide_image_url_passwords(module)
    assert module.no_log_values == {"s3cr%40t", "s3cr@t", "sumpass"}
