"""The console parser is what every guest-verified assertion rests on: it must not invent facts."""

from tests.support.guest_report import latest_complete, parse_reports

LOG = """
SYSLINUX 6.04
VFREPORT 1 begin mode=stay boot=aaaa1111
VFREPORT 1 cpus online=1
VFREPORT 1 mem total_kib=125064
VFREPORT 1 disk name=vda size=67108864 ro=0
VFREPORT 1 fs dev=vdb type=ext4 label=ephemeral0
VFREPORT 1 swap dev=vdc active=0 label=
VFREPORT 1 nic name=eth0 mac=52:54:00:aa:bb:cc
VFREPORT 1 ipv4 nic=eth0 addr=192.0.2.17
VFREPORT 1 agent port=vport1p1
VFREPORT 1 uuid value=0f0e0d0c-0000-4000-8000-000000000001
VFREPORT 1 configdrive dev=sr0 label=config-2
VFREPORT 1 cdfile path=openstack/latest/meta_data.json size=13 sha256=ab b64=eyJ1dWlkIjoieCJ9Cg==
VFREPORT 1 end
[    3.1] some kernel message VFREPORT 2 begin mode=stay boot=aaaa1111
VFREPORT 2 cpus online=2
VFREPORT 2 mem total_kib=125064
VFREPORT 2 end
VFREPORT 3 begin mode=stay boot=aaaa1111
VFREPORT 3 cpus online=4
"""


def test_all_reports_are_parsed_in_order_and_the_torn_one_is_incomplete():
    reports = parse_reports(LOG)
    assert [(r.seq, r.complete) for r in reports] == [(1, True), (2, True), (3, False)]


def test_facts_of_a_report():
    first = parse_reports(LOG)[0]
    assert first.cpus == 1 and first.mem_kib == 125064 and first.mode == "stay"
    assert first.disk_size("vda") == 64 * 1024 * 1024
    assert first.filesystems == {"vdb": {"type": "ext4", "label": "ephemeral0"}}
    assert first.swaps["vdc"]["active"] == "0"
    assert first.nics == {"eth0": "52:54:00:aa:bb:cc"}
    assert first.ipv4 == {"eth0": "192.0.2.17"} and first.agent_port == "vport1p1"
    assert first.uuid.startswith("0f0e0d0c")
    assert first.configdrive == {"dev": "sr0", "label": "config-2"}
    assert first.cdfile_bytes("openstack/latest/meta_data.json") == b'{"uuid":"x"}\n'


def test_a_report_without_agent_line_has_no_agent():
    assert parse_reports(LOG)[1].agent_port is None


def test_latest_complete_skips_a_report_still_being_printed():
    latest = latest_complete(LOG)
    assert latest.seq == 2 and latest.cpus == 2


def test_a_new_boot_restarts_numbering_and_the_latest_wins():
    log = LOG + "VFREPORT 1 begin mode=once boot=bbbb2222\nVFREPORT 1 cpus online=8\nVFREPORT 1 end\n" \
                "VFREPORT poweroff\n"
    latest = latest_complete(log)
    assert (latest.boot, latest.cpus, latest.poweroff) == ("bbbb2222", 8, "poweroff")


def test_no_report_at_all():
    assert latest_complete("SYSLINUX\nKernel panic\n") is None


def test_a_report_cut_by_other_output_is_not_complete_and_heartbeats_are_read():
    from tests.support.guest_report import heartbeats, latest_complete, parse_reports

    text = ("VFREPORT 1 begin mode=stay boot=aa\nVFREPORT 1 cpus online=1\nVFREPORT 1 mem total_kib=1000\n"
            "VFREPORT 1 end\nVFBEAT 1 boot=aa up=3.20\n"
            "VFREPORT 2 begin mode=stay boot=aa\nVFREPORT 2 cpus online=2\nVFREPORT 2 mem VFBEAT 2 boot=aa up=4.21\n"
            "VFREPORT 2 end\n")
    reports = parse_reports(text)
    assert [(r.seq, r.complete, r.garbled) for r in reports] == [(1, True, False), (2, False, True)]
    assert latest_complete(text).cpus == 1
    assert [(b.n, b.boot, b.uptime) for b in heartbeats(text)] == [(1, "aa", 3.2), (2, "aa", 4.21)]
