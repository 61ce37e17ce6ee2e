"""Any arguments to a module of ours end in a result or a clean failure (issue 10 item 11).

The strategies are built from the module's own argument spec, so every option (and every option added later) is
drawn: values of the declared type, boundary values of that type, and values of any other type. The module's
``main()`` runs in this process with its arguments handed over as Ansible hands them (``_ANSIBLE_ARGS``): Ansible's
real argument parsing, check mode, exit_json/fail_json, only without a new interpreter per example, so a test can
afford hundreds of examples. What it asserts: the module printed one JSON result; a failure has a ``msg`` with no
"internal error" and no traceback; a success says whether it changed something.

Safety: the libvirt URI is always a private test driver (a file describing one host with one guest), never
``qemu:///system``; every path an option can name lies under the test's own directory, and the module runs in a
directory five levels below it, so relative paths and ``..`` stay inside too; sleeps are skipped (a retry delay
of an hour must not stall the suite); URLs point at files of the test or at a closed port on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import time
from typing import Any, Dict, Mapping, Optional, Sequence

from ansible.module_utils import basic
from hypothesis import event, strategies as st
from hypothesis.errors import InvalidArgument

# Values of any type: what a YAML playbook or a template can hand to any option.
ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True),
                     st.text(max_size=12), st.lists(st.text(max_size=4), max_size=2),
                     st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))
INTEGERS = st.one_of(st.integers(-3, 3), st.integers(-(1 << 64), 1 << 64), st.sampled_from(
    [86400, 86401, 1 << 31, (1 << 63) - 1, 1 << 63, "INFINITY", "1e999", "0x10", "-0", " 5", "5\n"]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["nan", "inf", "-5", "1e400"]))
BOOLEANS = st.one_of(st.booleans(), st.sampled_from(["yes", "no", "maybe", "", 2, "on"]))
# A name that passes most modules' rules, or (a third of the time) any text
NAMES = st.one_of(st.sampled_from(["g1", "g1", "web-1", "a.b_c", "G" * 64]), st.sampled_from(["g1", "other"]),
                  st.text(max_size=20))
HOSTILE_TEXT = st.one_of(st.text(max_size=20), st.sampled_from(
    ["", " ", ".", "..", "../x", "a/b", "a\n", "\x00", "é", "e\u0301", "<x/>", "a&b", "x" * 300, "20T", "-1", "0"]))

GUEST_XML = """<domain type='test'>
  <name>g1</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <memory>8388608</memory>
  <vcpu>2</vcpu>
  <os><type>hvm</type></os>
</domain>
"""


class Sandbox:
    """The directory an example may touch, and the values that point into it: a libvirt test driver host with one
    guest g1 (running), whose definition also lies where domain_xml would have written it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.workdir = os.path.join(root, "w", "o", "r", "k", "dir")
        self.instances = os.path.join(root, "instances")
        self.image = os.path.join(root, "images", "tiny.raw")
        self.host_xml = os.path.join(root, "host.xml")
        os.makedirs(self.workdir)
        os.makedirs(self.instances)
        os.makedirs(os.path.dirname(self.image))
        with open(self.image, "wb") as handle:
            handle.truncate(1 << 20)
        with open(self.host_xml, "w", encoding="utf-8") as handle:
            handle.write("<node>\n%s</node>\n" % GUEST_XML)
        os.makedirs(os.path.join(self.instances, "g1"))
        with open(os.path.join(self.instances, "g1", "domain.xml"), "w", encoding="utf-8") as handle:
            handle.write(GUEST_XML)  # what domain reads when no xml is given
        self.uri = "test://" + self.host_xml

    def paths(self) -> st.SearchStrategy:
        """Absolute paths under the sandbox, relative and odd ones (they resolve below the working directory)."""
        inside = st.sampled_from(["", "instances", "instances/g1", "instances/g1/disk", "images/tiny.raw",
                                  "host.xml", "missing/file", "instances/_base", "instances/locks"])
        return st.one_of(inside.map(lambda rel: os.path.join(self.root, rel)),
                         st.sampled_from(["", ".", "..", "rel/dir", "a\nb", "../../x", "x" * 300]),
                         st.text(max_size=12).filter(lambda text: not text.startswith("/")))

    def urls(self) -> st.SearchStrategy:
        return st.one_of(st.sampled_from([
            "file://" + self.image, self.image, "file://" + self.image + ".missing", "file://otherhost/x.img",
            "http://127.0.0.1:9/x.img", "https://user:secret@127.0.0.1:9/x.qcow2", "ftp://127.0.0.1/x.img", "",
            "http://", "file://", "file:///", "http://[::1/x"]), st.text(max_size=12))

    def uris(self) -> st.SearchStrategy:
        # never "" or None: libvirt would open its default connection, the host's own
        return st.sampled_from([self.uri, self.uri, self.uri, "test:///missing-virtfleet.xml"])


def _typed(option: Mapping[str, Any], sandbox: Sandbox, special: Mapping[str, st.SearchStrategy],
           loose: bool) -> st.SearchStrategy:
    """Values of the option's declared type (its choices, its elements, its sub-options); ``loose`` adds values
    Ansible's own type checks refuse (they must be refused cleanly too)."""
    kind = option.get("type", "str")
    if option.get("choices"):
        typed = st.sampled_from(list(option["choices"]))
    elif kind == "int":
        typed = INTEGERS if loose else st.one_of(st.integers(-3, 3), st.integers(-(1 << 64), 1 << 64))
    elif kind == "float":
        typed = st.one_of(INTEGERS, FLOATS) if loose else st.one_of(st.integers(-3, 100), st.floats())
    elif kind == "bool":
        typed = BOOLEANS if loose else st.booleans()
    elif kind == "path":
        typed = sandbox.paths()
    elif kind == "list":
        if option.get("options"):
            element = few_options(option["options"], sandbox, special, {}, loose)
        elif option.get("elements") == "path":
            element = sandbox.paths()
        else:
            element = HOSTILE_TEXT
        typed = st.lists(st.one_of(element, element, ANYTHING) if loose else element, max_size=3)
    elif kind == "dict":
        typed = few_options(option["options"], sandbox, special, {}, loose) if option.get("options") else \
            st.dictionaries(HOSTILE_TEXT, st.one_of(HOSTILE_TEXT, ANYTHING) if loose else HOSTILE_TEXT, max_size=3)
    else:
        typed = HOSTILE_TEXT if loose or kind == "str" else st.one_of(HOSTILE_TEXT, st.integers())
    return typed


@st.composite
def few_options(draw, spec: Mapping[str, Mapping[str, Any]], sandbox: Sandbox,
                special: Mapping[str, st.SearchStrategy], pinned: Mapping[str, st.SearchStrategy],
                loose: bool, most: int = 6, names: Optional[Sequence[str]] = None,
                key: Optional[str] = None) -> Dict[str, Any]:
    """Some of ``spec``'s options (the required and pinned ones and ``key`` always, at most ``most`` others)."""
    args = {name: draw(strategy, label=name) for name, strategy in pinned.items()}
    candidates = [name for name in (names or spec) if name not in pinned]
    required = [name for name in candidates if spec[name].get("required") or name == key]
    chosen = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=most)) if candidates else []
    for name in required + [name for name in chosen if name not in required]:
        typed = special[name] if name in special else _typed(spec[name], sandbox, special, loose)
        args[name] = draw(st.one_of(typed, typed, ANYTHING) if loose else typed, label=name)
    if loose and draw(st.integers(0, 9), label="bogus?") == 0:
        args["bogus_option"] = draw(ANYTHING, label="bogus_option")
    return args


def module_arguments(spec: Mapping[str, Mapping[str, Any]], sandbox: Sandbox,
                     special: Mapping[str, st.SearchStrategy], key: Optional[str] = None) -> st.SearchStrategy:
    """A module's arguments: mostly a few options of the right types (so the module's own checks and its work are
    reached, not only Ansible's type checks), sometimes many, sometimes values of any type, sometimes the list
    form (``items``).

    ``special`` gives the values that matter for an option name (at any depth: an item's options too); the pinned
    options (see ``pinned_for``) are always given, and only from their strategy; ``key`` (what names the resource:
    name, guest, url) is given in every well-typed form, at the top or in each item.
    """
    pinned = pinned_for(spec, sandbox)
    single = [name for name in spec if name != "items"]
    forms = [few_options(spec, sandbox, special, pinned, False, names=single, key=key),
             few_options(spec, sandbox, special, pinned, False, names=single, key=key),
             few_options(spec, sandbox, special, pinned, False, most=len(spec), names=single, key=key),
             few_options(spec, sandbox, special, pinned, True, most=len(spec))]
    if "items" in spec:
        shared = [name for name in single if name not in spec["items"]["options"]]
        forms.append(st.builds(lambda top, items: dict(top, items=items),
                               few_options(spec, sandbox, special, pinned, False, most=2, names=shared),
                               st.lists(few_options(spec["items"]["options"], sandbox, special, {}, False, key=key),
                                        max_size=3)))
    return st.one_of(forms)


def pinned_for(spec: Mapping[str, Any], sandbox: Sandbox) -> Dict[str, st.SearchStrategy]:
    """The options whose default is the host's own (connection and instances tree): always the sandbox's."""
    pinned = {}
    if "uri" in spec:
        pinned["uri"] = sandbox.uris()
    if "batch_concurrency" in spec:  # (a well-typed value most of the time: a list form is reached only then)
        pinned["batch_concurrency"] = st.sampled_from([1, 2, 4, 4, 0, -1, 1 << 40])
    if "instances_path" in spec:
        pinned["instances_path"] = st.one_of(*[st.just(sandbox.instances)] * 9, sandbox.paths())
    return pinned


def each_item(args: Dict[str, Any]) -> list:
    """The top-level arguments and every item of a list form that is a dict (what a module would act on)."""
    items = args.get("items")
    return [args] + [item for item in items if isinstance(item, dict)] if isinstance(items, list) else [args]


class TookTooLong(BaseException):
    """An example ran past its time limit (a BaseException: the module's own ``except Exception`` must not turn it
    into a clean-looking failure)."""


def _too_long(_signum, _frame):
    raise TookTooLong("the module ran for more than %d s on these arguments" % EXAMPLE_SECONDS)


EXAMPLE_SECONDS = 60


def run_main(module_name: str, args: Dict[str, Any], sandbox: Sandbox, check: bool) -> Dict[str, Any]:
    """Run plugins/modules/<module_name>.py's main() here with ``args``; returns the JSON it printed.

    An example that runs past EXAMPLE_SECONDS fails (sleeps are skipped, so a wait polls until its deadline: the
    tests bound the timeouts they give, and this catches one they missed), unless a timer is already running (the
    mutation runner's: it is left alone)."""
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=True, _ansible_tmpdir=sandbox.root,
                   _ansible_remote_tmp=sandbox.root,
                   _ansible_module_name="virtfleet.libvirt." + module_name)
    module = importlib.import_module("ansible_collections.virtfleet.libvirt.plugins.modules." + module_name)
    out, err = io.StringIO(), io.StringIO()
    # ansible-core 2.19 reads a serialization profile beside the arguments; older releases (2.17, the oldest
    # meta/runtime.yml allows) have no such global, and their module_utils.basic refuses unknown names.
    has_profile = hasattr(basic, "_ANSIBLE_PROFILE")
    saved = basic._ANSIBLE_ARGS, getattr(basic, "_ANSIBLE_PROFILE", None), time.sleep, os.getcwd()
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode()
    if has_profile:
        basic._ANSIBLE_PROFILE = "legacy"
    time.sleep = lambda seconds: None
    os.chdir(sandbox.workdir)
    exit_code: Optional[Any] = None
    timed = signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    if timed:
        previous_handler = signal.signal(signal.SIGALRM, _too_long)
        signal.setitimer(signal.ITIMER_REAL, EXAMPLE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                module.main()
            except SystemExit as exc:
                exit_code = exc.code
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
        basic._ANSIBLE_ARGS, profile, time.sleep, cwd = saved
        if has_profile:
            basic._ANSIBLE_PROFILE = profile
        os.chdir(cwd)
    text = out.getvalue()
    assert text.strip(), "%s printed nothing (exit %r); stderr: %s" % (module_name, exit_code, err.getvalue())
    assert "Traceback" not in err.getvalue(), err.getvalue()
    result = json.loads(text[text.index("{"):])
    result["_exit"] = exit_code
    return result


def assert_clean(result: Dict[str, Any]) -> None:
    """A clean failure (a message, no internal error, no traceback) or a result that says whether it changed."""
    text = json.dumps(result)
    # what the examples reached, for --hypothesis-show-statistics (the first words of each failure)
    with contextlib.suppress(InvalidArgument):  # (outside a hypothesis test there are no statistics)
        event("failed: " + " ".join(str(result.get("msg")).split()[:4]) if result.get("failed") else "ran")
    assert "internal error" not in text and "Traceback" not in text, text
    if result.get("failed"):
        assert isinstance(result.get("msg"), str) and result["msg"].strip(), result
        assert result["_exit"] == 1, result
    else:
        assert result["_exit"] in (0, None) and isinstance(result.get("changed"), bool), result
