"""The internals behind ``nni_covid3d/compat.py`` still exist as used, and nothing else uses internals.

When one of these fails after an upgrade, the message says what changed and where to look; fix
``nni_covid3d/compat.py`` (the only place that touches them), then update its ``CHECKED_AGAINST``.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import sqlite3
from pathlib import Path

import pytest
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from nni_covid3d import compat
from tests.conftest import REPO_ROOT

#: The project's source folders (installed as nni_covid3d, nni_covid3d.strategies, nni_covid3d.search_spaces).
SOURCES = ("nni_covid3d", "strategies", "search_spaces")
ADAPTER = REPO_ROOT / "nni_covid3d" / "compat.py"

#: NNI modules documented in NNI 3.0's API reference (docs/source/reference/*.rst of the v3.0 tag).
NNI_PUBLIC_MODULES = {
    "nni", "nni.experiment", "nni.mutable",
    "nni.nas.nn.pytorch", "nni.nas.evaluator", "nni.nas.evaluator.pytorch",
    "nni.nas.strategy", "nni.nas.strategy.base", "nni.nas.strategy.middleware", "nni.nas.strategy.utils",
    "nni.nas.oneshot.pytorch.strategy",  # its OneShotStrategy; the strategies themselves: nni.nas.strategy
    "nni.nas.oneshot.pytorch.base_lightning", "nni.nas.oneshot.pytorch.profiler",
    "nni.nas.oneshot.pytorch.supermodule.differentiable", "nni.nas.oneshot.pytorch.supermodule.sampling",
    "nni.nas.oneshot.pytorch.supermodule.proxyless", "nni.nas.oneshot.pytorch.supermodule.operation",
    "nni.nas.experiment", "nni.nas.experiment.config", "nni.nas.profiler", "nni.nas.space", "nni.nas.execution",
    "nni.nas.hub.pytorch", "nni.nas.benchmark",
}
#: Documented modules of which only some names are documented.
NNI_PUBLIC_NAMES = {"nni.nas.oneshot.pytorch.strategy": {"OneShotStrategy", "DARTS", "GumbelDARTS", "Proxyless", "ENAS",
                                                          "RandomOneShot"}}
#: Libraries whose internals may be touched in compat.py only.
GUARDED = ("nni", "torch", "pytorch_lightning", "lightning", "lightning_fabric")
#: Private names the project reads from other libraries, outside this adapter's scope (not NNI,
#: Lightning or torch): MONAI's PersistentDataset hook and argparse's types in annotations.
OTHER_LIBRARIES = {"_pre_transform": "MONAI (nni_covid3d/data/transforms.py)",
                   "_SubParsersAction": "argparse", "_ArgumentGroup": "argparse"}


# ------------------------------------------------------------------------------------ versions
def setup_pins() -> dict[str, str]:
    """``{distribution name: specifier}`` of ``INSTALL_REQUIRES`` in setup.py."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    requires = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and any(getattr(target, "id", None) == "INSTALL_REQUIRES" for target in node.targets))
    pins = {}
    for requirement in ast.literal_eval(requires):
        name, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", requirement).groups()
        pins[name.lower().replace("_", "-")] = spec.strip()
    return pins


def test_setup_py_pins_what_compat_was_checked_against() -> None:
    pins = setup_pins()
    for name, spec in compat.PINS.items():
        assert name in pins and SpecifierSet(pins[name]) == SpecifierSet(spec), (
            f"setup.py pins {name}{pins.get(name, ' (nothing)')}, but nni_covid3d/compat.py was checked for "
            f"{name}{spec}: re-check every internal listed in compat's docstring with the new version "
            "(tests/test_compat.py), then update compat.PINS and compat.CHECKED_AGAINST")
        checked = compat.CHECKED_AGAINST[name]
        assert Version(checked) in SpecifierSet(spec), f"compat.CHECKED_AGAINST[{name!r}] = {checked} is outside {spec}"


def test_installed_versions_are_within_the_pins() -> None:
    for name, version in compat.installed_versions().items():
        assert version is not None, f"{name} is not installed (importlib.metadata)"
        assert Version(version) in SpecifierSet(compat.PINS[name]), (
            f"installed {name} {version} is outside the pinned {compat.PINS[name]} that nni_covid3d/compat.py "
            "was checked against: reinstall (make test), or re-check compat's internals for it")


# ------------------------------------------------------------------------ 1. NNI's DARTS module
def test_darts_lightning_module_is_the_one_nni_darts_uses_with_the_arguments_we_pass() -> None:
    from nni.nas.evaluator.pytorch import LightningModule
    from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule
    from nni.nas.strategy import DARTS

    darts_module = compat.DartsLightningModule
    where = "nni/nas/oneshot/pytorch/differentiable.py (DartsLightningModule)"
    assert isinstance(DARTS().configure_oneshot_module(LightningModule()), darts_module), (
        f"NNI's DARTS no longer builds {where}: GumbelDNASLightningModule should follow what it builds now")
    assert issubclass(darts_module, BaseOneShotLightningModule), f"{where} left BaseOneShotLightningModule"
    parameters = inspect.signature(darts_module.__init__).parameters
    missing = {"training_module", "arc_learning_rate", "gradient_clip_val", "warmup_epochs"} - set(parameters)
    assert not missing, f"{where}: __init__ lost {sorted(missing)} (GumbelDNASLightningModule passes them)"
    for hook in ("on_train_epoch_start", "postprocess_weight_optimizers"):
        assert hook in vars(darts_module), f"{where} no longer defines {hook} (GumbelDNAS relies on it)"


# ------------------------------------------------------------------------ 2. torch's autograd engine
def test_the_engine_says_which_gradients_a_backward_pass_needs() -> None:
    assert hasattr(torch._C, "_will_engine_execute_node"), (
        "torch._C._will_engine_execute_node is gone: compat.will_engine_execute_node now always says True, so "
        "search_spaces/ops.py's depthwise convolution computes weight gradients nobody asked for; find its "
        "replacement (torch/autograd/graph.py's register_multi_grad_hook used it)")
    seen: list[list[bool]] = []

    class Product(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad: torch.Tensor):
            a, b = ctx.saved_tensors
            seen.append([compat.will_engine_execute_node(ctx.next_functions[i][0]) for i in (0, 1)])
            return grad * b, grad * a

    a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    torch.autograd.grad(Product.apply(a, b).sum(), [a])
    Product.apply(a, b).sum().backward()
    assert seen == [[True, False], [True, True]], f"torch._C._will_engine_execute_node answers differently: {seen}"


# ------------------------------------------------------------------------ 3. NNI's experiment records
def nni_schema() -> str:
    """The SQL with which NNI's manager creates an experiment database (nni_node/core/sqlDatabase.js)."""
    spec = importlib.util.find_spec("nni_node")
    assert spec is not None and spec.submodule_search_locations, "the nni_node package (NNI's manager) is missing"
    source = Path(next(iter(spec.submodule_search_locations))) / "core" / "sqlDatabase.js"
    assert source.is_file(), f"{source} is gone: find where NNI's manager now creates its database"
    match = re.search(r"createTables\s*=\s*`([^`]*)`", source.read_text())
    assert match, f"{source}: no createTables SQL any more; see how NNI's manager now creates its tables"
    return match.group(1)


def test_the_database_columns_we_read_are_those_nni_creates(tmp_path: Path) -> None:
    from nni_covid3d.nnictl.records import load_experiment

    folder = tmp_path / "exp"
    (folder / compat.EXPERIMENT_DB).parent.mkdir(parents=True)
    connection = sqlite3.connect(folder / compat.EXPERIMENT_DB)
    connection.executescript(nni_schema())
    for table, columns in compat.DB_COLUMNS.items():
        created = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        assert set(columns) <= created, (
            f"NNI's table {table} (nni_node/core/sqlDatabase.js) lacks {sorted(set(columns) - created)}, which "
            "nni_covid3d/compat.py read_experiment_db reads")
    rows = {
        "ExperimentProfile": {"params": json.dumps({"trialCommand": "python -m nni_covid3d.trial dnas"}),
                              "id": "exp", "revision": 1},
        "TrialJobEvent": {"timestamp": 1, "trialJobId": "T", "event": "SUCCEEDED", "logPath": str(tmp_path / "T"),
                          "data": json.dumps({"parameter_id": 0, "parameters": {"tau": 2.0}}), "sequenceId": 0},
        "MetricData": {"timestamp": 2, "trialJobId": "T", "parameterId": "0", "type": "FINAL",
                       "data": json.dumps(json.dumps({"default": 0.75}))},
    }
    for table, row in rows.items():
        connection.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           tuple(row.values()))
    connection.commit()
    connection.close()
    record = load_experiment("exp", folder)
    assert record.config["trialCommand"].endswith("dnas")
    assert [(t.id, t.status, t.parameters, t.final) for t in record.trials] == \
        [("T", "SUCCEEDED", {"tau": 2.0}, {"default": 0.75})]


def test_the_registry_we_read_is_the_one_nnictl_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nni.tools.nnictl.config_utils import Experiments
    from nni.tools.nnictl.constants import NNI_HOME_DIR

    where = "nni/tools/nnictl (constants.NNI_HOME_DIR, config_utils.Experiments)"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Path(NNI_HOME_DIR).name == compat.NNI_HOME.name, f"{where}: nnictl's home is now {NNI_HOME_DIR}"
    assert "logDir" in inspect.signature(Experiments.add_experiment).parameters, f"{where}: no logDir recorded"
    Experiments(home_dir=str(compat.NNI_HOME.expanduser())).add_experiment(
        "abc", 8080, 0, "local", "name", logDir=str(tmp_path / "work"))
    assert compat.EXPERIMENT_REGISTRY.expanduser().is_file(), f"{where}: the registry file moved"
    assert compat.registered_log_dir("abc") == tmp_path / "work", f"{where}: the registry's format changed"
    assert compat.registered_log_dir("other") is None


# ------------------------------------------------------------------------ 4. NNI's trial reporting
def test_a_resumed_trial_can_continue_its_intermediate_sequence() -> None:
    import nni.trial

    where = "nni/trial.py (overwrite_intermediate_seq, _intermediate_seq)"
    assert list(inspect.signature(nni.trial.overwrite_intermediate_seq).parameters) == ["value"], f"{where} changed"
    before = nni.trial._intermediate_seq
    try:
        compat.continue_intermediate_sequence(3)
        assert nni.trial._intermediate_seq == 3, f"{where}: the next result's sequence number lives elsewhere now"
    finally:
        nni.trial.overwrite_intermediate_seq(before)


# ------------------------------------------------------------------------ nothing else uses internals
def project_sources() -> dict[Path, ast.Module]:
    paths = [path for folder in SOURCES for path in sorted((REPO_ROOT / folder).rglob("*.py"))]
    return {path: ast.parse(path.read_text()) for path in paths}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def is_internal_import(module: str, name: str | None) -> bool:
    """Whether ``from module import name`` (``import module`` when ``name`` is None) reaches an internal."""
    if module.split(".")[0] not in GUARDED:
        return False
    if any(_is_private(part) for part in module.split(".")) or (name is not None and _is_private(name)):
        return True
    if module.split(".")[0] != "nni" or f"{module}.{name}" in NNI_PUBLIC_MODULES:
        return False
    return module not in NNI_PUBLIC_MODULES or name not in NNI_PUBLIC_NAMES.get(module, {name})


def internal_imports(trees: dict[Path, ast.Module]) -> list[str]:
    """Imports of NNI, Lightning or torch internals: private modules or names, undocumented NNI modules."""
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [(node.module, alias.name) for alias in node.names]
            else:
                continue
            for module, name in imported:
                if is_internal_import(module, name):
                    what = module if name is None else f"{module} import {name}"
                    found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {what}")
    return found


def private_attributes(trees: dict[Path, ast.Module]) -> list[str]:
    """Reads of ``x._name`` where no project code defines ``_name``: another library's internals.

    On ``self``/``cls`` only names the project assigns as attributes or defines in a class count.
    """
    members: set[str] = set()
    everything: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                members.add(node.attr)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        members.add(item.name)
                    targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
                    members.update(t.id for t in targets if isinstance(t, ast.Name))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                everything.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                everything.add(node.id)
    everything |= members
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)) or node.attr in OTHER_LIBRARIES:
                continue
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr not in (members if on_self else everything):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_compat_touches_internals() -> None:
    trees = {path: tree for path, tree in project_sources().items() if path != ADAPTER}
    found = internal_imports(trees) + private_attributes(trees)
    assert not found, ("NNI / Lightning / torch internals outside nni_covid3d/compat.py; use public API, or move "
                       "the access into compat.py with a check here:\n" + "\n".join(found))


def test_the_guard_finds_internals() -> None:
    source = ast.parse("import torch\nfrom nni.nas.oneshot.pytorch.differentiable import DartsLightningModule\n"
                       "from nni.nas.oneshot.pytorch.strategy import DARTS, MutationHook\n"
                       "class A:\n    def f(self, trainer):\n        self._mine = trainer.strategy._ddp_kwargs\n"
                       "        return self._trainer, self._mine, torch._C\n")
    trees = {REPO_ROOT / "example.py": source}
    assert internal_imports(trees) == [
        "example.py:2: nni.nas.oneshot.pytorch.differentiable import DartsLightningModule",
        "example.py:3: nni.nas.oneshot.pytorch.strategy import MutationHook",
    ]
    assert sorted(private_attributes(trees)) == [
        "example.py:6: trainer.strategy._ddp_kwargs", "example.py:7: self._trainer", "example.py:7: torch._C",
    ]


# ------------------------------------------------------------------------ the public ways GumbelDNAS uses
def test_gumbel_dnas_leaves_the_users_trainer_and_evaluator_as_given(tmp_path: Path) -> None:
    """Its callbacks reach the Trainer through LightningModule.configure_callbacks, its resume through the
    fit arguments of NNI's new evaluator; the user's Trainer, strategy and fit arguments stay as built."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from nni_covid3d.strategies import GumbelDNAS
    from nni_covid3d.training.resume import ResumableRun
    from tests.strategies.toy import MixedSpace, image_dataset, make_evaluator, run_search

    def evaluator_and_state() -> tuple:
        evaluator = make_evaluator(image_dataset(16), image_dataset(8, seed=1), epochs=1, batch_size=8)
        return evaluator, lambda: (list(evaluator.trainer.callbacks), evaluator.trainer.strategy,
                                   type(evaluator.trainer.strategy.checkpoint_io), dict(evaluator.fit_kwargs))

    evaluator, state = evaluator_and_state()
    given = state()
    run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0, checkpoint_dir=tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()  # written by the callback configure_callbacks added
    assert [type(c) for c in evaluator.trainer.callbacks[len(given[0]):]] == [ResumableRun, ModelCheckpoint]

    evaluator, state = evaluator_and_state()
    given = state()
    mutated = GumbelDNAS(seed=0, checkpoint_dir=tmp_path / "ckpt", resume_from="last").mutate_evaluator(evaluator)
    assert state() == given
    assert mutated.fit_kwargs["ckpt_path"] == str(tmp_path / "ckpt" / "last.ckpt")
    assert [type(c) for c in mutated.module.configure_callbacks()] == [ResumableRun, ModelCheckpoint]


LIGHTNING_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "RANK",
                         "LOCAL_WORLD_SIZE", "GROUP_RANK")


def test_gumbel_dnas_under_ddp_asks_for_the_public_strategy_that_allows_unused_parameters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One DDP process in this one: a Trainer whose DDP expects every gradient stops with what to pass."""
    from nni_covid3d.strategies import GumbelDNAS
    from tests.strategies.toy import MixedSpace, image_dataset, make_evaluator, run_search

    for key in LIGHTNING_ENVIRONMENT:  # Lightning sets these; restored afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    evaluator = make_evaluator(image_dataset(16), image_dataset(8, seed=1), epochs=1, batch_size=8, strategy="ddp")
    try:
        with pytest.raises(RuntimeError, match="strategy='ddp_find_unused_parameters_true'"):
            run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
