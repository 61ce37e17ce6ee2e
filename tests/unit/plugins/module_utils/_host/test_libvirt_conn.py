from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import explain_libvirt_failure

SWTPM_FAILURE_LOG = """Starting vTPM manufacturing as tss:tss @ Wed 25 Nov 2026 10:50:44 PM UTC
Successfully created RSA 2048 EK with handle 0x81010001.
  Invoking /usr/bin/swtpm_localca --type ek --ek aba3407e882be59034 --dir /tmp/swtpm_setup.certs.TYSDZ3
Need read/write rights on /var/lib/swtpm-localca/.lock.swtpm-localca for user tss.
swtpm_localca exit with status 1:
An error occurred. Authoring the TPM state failed.
Error getting next filename: No child processes
Ending vTPM manufacturing @ Wed 25 Nov 2026 10:50:44 PM UTC
"""


def _libvirt_text(log_path):
    return ("internal error: Could not run '/usr/bin/swtpm_setup'. exitstatus: 1; "
            "Check error log '%s' for details." % log_path)


def test_a_failed_swtpm_setup_quotes_the_reason_from_its_log_and_names_the_fix(tmp_path):
    log = tmp_path / "guest-swtpm.log"
    log.write_text(SWTPM_FAILURE_LOG)
    text = explain_libvirt_failure(_libvirt_text(log))
    assert text.startswith(_libvirt_text(log))
    assert "Need read/write rights on /var/lib/swtpm-localca/.lock.swtpm-localca for user tss." in text
    assert "Authoring the TPM state failed." in text
    # Key material from the invocation lines and the banner lines are not quoted.
    assert "aba3407e" not in text and "Ending vTPM" not in text
    assert "chown -R tss /var/lib/swtpm-localca" in text


def test_an_unreadable_log_still_names_the_swtpm_fix(tmp_path):
    text = explain_libvirt_failure(_libvirt_text(tmp_path / "missing.log"))
    assert "The log ends" not in text
    assert "swtpm_user" in text


def test_other_errors_pass_through_unchanged():
    text = "Requested operation is not valid: domain is already running"
    assert explain_libvirt_failure(text) == text


def test_a_forwarded_port_in_use_names_the_fix():
    text = ("internal error: process exited while connecting to monitor: 2026-12-02T02:30:00.000000Z "
            "qemu-system-x86_64: -netdev user,id=vfnet0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22: Could not set up host forwarding "
            "rule 'tcp:127.0.0.1:2222-:22'")
    explained = explain_libvirt_failure(text)
    assert explained.startswith(text) and "give nics[].port_forwards[].host_port a free port" in explained
