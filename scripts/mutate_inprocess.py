"""Mutation testing in one process: mutmut's mutants, run against the tests without a new process per mutant.

mutmut (2.x, used here as a library from its own venv) lists and applies the mutations of a source file; instead of
writing each mutant to disk and starting pytest anew (seconds per mutant: 2000 mutants of the inspector would take
hours), this script imports the module once, then for each mutant compiles the mutated source into the module
itself and patches the functions and methods already imported elsewhere (tests hold references to them) with the
mutant's code, runs the tests with ``pytest.main`` (``-x``: the first failure kills the mutant), and puts the
original code back. Test modules are imported anew for each mutant (their parameters come from the module).

A mutant that survives although patching could not carry all of it (a class whose shape changed: a decorator
removed, dataclass options, bases) is run once more the slow way: written to the file, pytest in a fresh process,
the file put back at once. So run this in a checkout of your own. A mutant whose tests run past
``--timeout`` seconds is killed by an alarm (an endless loop is a behaviour the tests notice).

Usage (scripts/mutation.sh calls it):
    mutate_inprocess.py --mutmut-site DIR --module DOTTED.NAME --file PATH --out RESULT.json -- PYTEST ARGS...
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import signal
import sys
import time
import types


class MutantTimeout(BaseException):
    """The tests ran past the time limit on this mutant (a BaseException: code under test that catches Exception,
    or hypothesis shrinking a failure, must not swallow it)."""


def _alarm(_signum, _frame):
    raise MutantTimeout()


def _functions_of(module):
    """Every function object defined by ``module``, by qualified name: module level and in its classes."""
    found = {}
    for name, value in vars(module).items():
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            found[name] = value
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for attr, member in vars(value).items():
                for func in _unwrap(member):
                    found["%s.%s.%s" % (name, attr, func.__name__)] = func
    # A decorator's wrapper (contextlib.contextmanager, functools.wraps) keeps the real function in __wrapped__.
    for name, func in list(found.items()):
        depth = 0
        while isinstance(getattr(func, "__wrapped__", None), types.FunctionType) and depth < 5:
            func, depth = func.__wrapped__, depth + 1
            found["%s%s" % (name, ".__wrapped__" * depth)] = func
    return found


def _unwrap(member):
    if isinstance(member, types.FunctionType):
        return [member]
    if isinstance(member, (staticmethod, classmethod)):
        return [member.__func__]
    if isinstance(member, property):
        return [f for f in (member.fget, member.fset, member.fdel) if f is not None]
    return []


def _shape(cls):
    """What patching code cannot change in a class: its bases, the kind of each member, its dataclass options."""
    return (tuple(cls.__bases__), sorted((k, type(v).__name__) for k, v in vars(cls).items()
                                         if k not in ("__dict__", "__weakref__", "__doc__")),
            repr(getattr(cls, "__dataclass_params__", None)),
            [(f.name, repr(f.default)) for f in getattr(cls, "__dataclass_fields__", {}).values()])


def _same_class_shapes(old_space, new_space, module_name):
    for name, value in old_space.items():
        if isinstance(value, type) and value.__module__ == module_name:
            new = new_space.get(name)
            if not isinstance(new, type) or _shape(new) != _shape(value):
                return False
    return True


def _state(func):
    return func.__code__, func.__defaults__, func.__kwdefaults__


def _set_state(func, state):
    func.__code__, func.__defaults__, func.__kwdefaults__ = state


class InPlace:
    """One module, mutated and restored in place."""

    def __init__(self, module_name):
        self.module = importlib.import_module(module_name)
        self.namespace = dict(vars(self.module))
        self.functions = _functions_of(self.module)
        self.saved = {name: _state(func) for name, func in self.functions.items()}

    def restore(self):
        vars(self.module).clear()
        vars(self.module).update(self.namespace)
        for name, func in self.functions.items():
            _set_state(func, self.saved[name])

    def apply(self, source, filename):
        """Run the mutant's source in the module's namespace, then point the original objects at its code.

        Returns False when part of the mutant could not be carried over."""
        code = compile(source, filename, "exec")
        space = vars(self.module)
        space.clear()
        space.update({k: self.namespace[k] for k in ("__name__", "__file__", "__package__", "__spec__",
                                                     "__loader__", "__builtins__") if k in self.namespace})
        exec(code, space)  # pylint: disable=exec-used
        new_functions = _functions_of(self.module)
        complete = _same_class_shapes(self.namespace, space, self.module.__name__)
        for name, func in self.functions.items():
            new = new_functions.get(name)
            if new is None:
                complete = False
                continue
            try:
                _set_state(func, _state(new))
            except ValueError:  # a different closure layout (generated dataclass methods, for one)
                complete = complete and func.__code__ == new.__code__
        for name, value in self.namespace.items():
            # Keep the original classes and functions (tests and other modules hold them), now carrying the
            # mutant's code; everything else (constants, tables, closures made at import) is the mutant's.
            if isinstance(value, (type, types.FunctionType)) and getattr(value, "__module__", None) == \
                    self.module.__name__ and name in space:
                space[name] = value
        return complete


def _on_disk(path, mutant, source, pytest_args, timeout):
    """A mutant patching cannot carry (a class's shape changed): write it to the file and run pytest afresh.
    Only here is the source file changed, for the length of one test run, and always put back."""
    import subprocess  # pylint: disable=import-outside-toplevel
    cache = os.path.join(os.path.dirname(path), "__pycache__")
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(mutant)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if os.path.isdir(cache):
            for name in os.listdir(cache):
                if name.startswith(os.path.basename(path)[:-3] + "."):
                    os.unlink(os.path.join(cache, name))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"] + pytest_args,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, timeout=timeout * 3,
                              check=False)
        return "survived" if proc.returncode == 0 else "killed"
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(source)


def _memoize_builders(module_name):
    """Make each one-argument builder of ``module_name`` (``builder(directory) -> path``, such as the inspector's
    corpus in tests/support/hostile_images.py) build once and then copy what it built: the mutants change the
    code under test, never the builders, and qemu-img runs would otherwise cost most of every mutant's time."""
    import inspect  # pylint: disable=import-outside-toplevel
    import shutil  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel
    module = importlib.import_module(module_name)
    store = tempfile.mkdtemp(prefix="mutation-builders-")
    built = {}

    def memoized(builder):
        def build(directory):
            if builder.__name__ not in built:
                scratch = os.path.join(store, builder.__name__)
                os.makedirs(scratch)
                path = builder(scratch)
                built[builder.__name__] = (sorted(os.listdir(scratch)), os.path.relpath(path, scratch))
            names, relative = built[builder.__name__]
            for name in names:
                source = os.path.join(store, builder.__name__, name)
                (shutil.copytree if os.path.isdir(source) else shutil.copy2)(source, os.path.join(directory, name))
            return os.path.join(directory, relative)
        build.__name__ = builder.__name__
        return build

    replaced = {}
    for name, value in list(vars(module).items()):
        if isinstance(value, types.FunctionType) and value.__module__ == module_name and not name.startswith("_") \
                and list(inspect.signature(value).parameters) == ["directory"]:
            replaced[value] = memoized(value)
            setattr(module, name, replaced[value])
    for name, value in list(vars(module).items()):  # the tables of (name, builder, ...) cases
        if isinstance(value, list) and value and all(isinstance(case, tuple) for case in value):
            value[:] = [tuple(replaced.get(item, item) if callable(item) else item for item in case)
                        for case in value]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--mutmut-site", required=True, help="site-packages of the venv that holds mutmut 2.x")
    parser.add_argument("--module", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--memoize-builders", help="module of image builders to build once and copy")
    parser.add_argument("--shard", default="1/1", help="K/N: test only every N-th mutant, starting at the K-th "
                        "(run N processes, then --merge their results)")
    parser.add_argument("--merge", nargs="*", help="merge these shard results into --out and stop")
    parser.add_argument("--recheck", action="store_true", help="with the results of a finished run of the same "
                        "source in --out, test only its survivors again")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    pytest_args = [a for a in args.pytest_args if a != "--"]
    if args.merge is not None:
        merged, sha = {}, None
        for path in args.merge:
            with open(path, encoding="utf-8") as handle:
                part = json.load(handle)
            if part.get("partial"):
                sys.exit("%s is not complete" % path)
            sha = sha or part["sha256"]
            if part["sha256"] != sha:
                sys.exit("%s was made from another source" % path)
            merged.update({m["id"]: m for m in part["mutants"]})
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"file": args.file, "sha256": sha, "partial": False,
                       "mutants": [merged[k] for k in sorted(merged)]}, handle, indent=1)
        return
    shard, shards = (int(x) for x in args.shard.split("/"))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:0] = [os.path.join(repo, ".build", "collections"), repo]  # as tests/conftest.py sets them up
    sys.path.append(args.mutmut_site)  # after the test venv: only mutmut and parso come from there
    from mutmut import Context, list_mutations, mutate  # pylint: disable=import-outside-toplevel
    import pytest  # pylint: disable=import-outside-toplevel

    with open(args.file, encoding="utf-8") as handle:
        source = handle.read()
    mutations = list_mutations(Context(source=source, filename=args.file))
    digest = __import__("hashlib").sha256(source.encode("utf-8")).hexdigest()
    done = {}
    if os.path.exists(args.out):  # resume a run of the same source that was stopped
        with open(args.out, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous.get("sha256") == digest and previous.get("partial"):
            done = {m["id"]: m for m in previous["mutants"]}
        elif previous.get("sha256") == digest and args.recheck:
            # a finished run of the same source: keep its kills, test its survivors against today's tests
            done = {m["id"]: m for m in previous["mutants"] if m["status"] in ("killed", "timeout")}
    try:
        from hypothesis import HealthCheck, Phase, settings  # pylint: disable=import-outside-toplevel
        # No shrinking and no example database: a mutant is killed by the first failing example.
        settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None,
                                  suppress_health_check=list(HealthCheck))
        settings.load_profile("mutation")
    except ImportError:
        pass

    def run_tests():
        # Test modules are imported anew for every mutant: their parameters (built at import from the module's
        # constants, such as the identifier rules) must be the mutant's. Support modules and conftests stay.
        for name in [n for n, m in sys.modules.items() if n.startswith("tests.unit.")
                     and os.path.basename(getattr(m, "__file__", "") or "").startswith("test_")]:
            del sys.modules[name]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return pytest.main(["-x", "-q", "-p", "no:cacheprovider"] + pytest_args)

    if args.memoize_builders:
        _memoize_builders(args.memoize_builders)
    target = InPlace(args.module)
    baseline = run_tests()
    if baseline != 0:
        baseline = run_tests()  # once more: a loaded machine can make a lock or process test miss its moment
    if baseline != 0:
        sys.exit("the tests fail without any mutation (pytest exit status %s); fix them first" % baseline)
    signal.signal(signal.SIGALRM, _alarm)
    results = []
    started = time.monotonic()

    def save(partial):
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({"file": args.file, "sha256": digest, "partial": partial, "mutants": results}, handle,
                      indent=1)
        os.replace(args.out + ".tmp", args.out)

    for number, mutation_id in enumerate(mutations, 1):
        if (number - shard) % shards:
            continue
        if number in done:
            results.append(done[number])
            continue
        context = Context(source=source, mutation_id=mutation_id, filename=args.file)
        mutant, _count = mutate(context)
        status = "killed"
        try:
            complete = target.apply(mutant, args.file)
            signal.setitimer(signal.ITIMER_REAL, args.timeout, 2.0)  # and again every 2 s until the tests stop
            try:
                code = run_tests()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if code == 0:
                status = "survived" if complete else _on_disk(args.file, mutant, source, pytest_args,
                                                              args.timeout)
        except MutantTimeout:
            status = "timeout"
        except Exception:  # pylint: disable=broad-except
            # the mutant does not even import: the module is broken, which every test would notice
            status = "killed"
        finally:
            target.restore()
        line = source.splitlines()[mutation_id.line_number] if mutation_id.line_number < len(
            source.splitlines()) else ""
        mutated_lines = mutant.splitlines()
        results.append({"id": number, "line": mutation_id.line_number + 1, "index": mutation_id.index,
                        "status": status, "original": line.strip(),
                        "mutant": mutated_lines[mutation_id.line_number].strip()
                        if mutation_id.line_number < len(mutated_lines) else ""})
        if len(results) % 50 == 0:
            save(True)
            print("%s: %d/%d mutants (shard %s), %.0f s" % (args.file, number, len(mutations), args.shard,
                                                            time.monotonic() - started), flush=True)
    save(False)
    counts = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    print("%s: %s" % (args.file, json.dumps(counts, sort_keys=True)))


if __name__ == "__main__":
    main()
