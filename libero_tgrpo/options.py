"""The command line and the YAML config files, derived from the config dataclasses.

:data:`OPTIONS` says which fields of :class:`~libero_tgrpo.config.PipelineConfig` and of the configs it composes
are user options, and under which flag; the types, defaults and help texts come from the dataclasses
themselves (their annotations, default instances and field docstrings). From it:

* tyro builds each subcommand's parser (:func:`parse`), through a constructor registry so that the package
  configs (``tgrpo.TGRPOConfig``, ...) need no command-line annotations of their own;
* :func:`command_line` writes the command that gives a config (the options that differ from the defaults);
* :func:`options_dict`, :func:`save_config` and :func:`load_config` write and read YAML config files
  (``--config run.yaml``), keyed by field name, with one mapping per part (``demos``, ``sft``, ``rl``, ``ppo``,
  ``eval``).

Why tyro: it reads the field docstrings the configs already have as help, keeps the hyphenated flag names
(``--num-envs``), handles nested dataclasses, subcommands and custom value parsers, has no dependency beyond
docstring-parser, typeguard and typing-extensions, and is actively released (1.0, Python >= 3.8). Its one
missing piece, config files, is the small YAML layer here, which also gives a format without tool-specific
tags. draccus (LeRobot's) reads YAML itself, but its flags use the field names with underscores
(``--output_dir``), so every documented flag would change, and it has no subcommands.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import shlex
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from libero_gym.experts import LIFT_RULES
from libero_tgrpo.config import HELDOUT_ALPHAS, PipelineConfig, default_alphas
from libero_tgrpo.paper import PAPER_ALPHAS
from libero_tgrpo.parsing import format_states, parse_hidden, parse_states, parse_task
from libero_tgrpo.stage_configs import DemoConfig, EvalConfig, HFConfig, SFTConfig
from tgrpo.config import (
    LOG_FORMATS,
    RATIO_LEVELS,
    ROLLOUT_MODES,
    UPDATE_SCHEDULES,
    ConfigError,
    PPOConfig,
    TGRPOConfig,
)

__all__ = ["OPTIONS", "SECTIONS", "Flag", "OptionError", "command_line", "options_dict", "from_options", "save_config",
           "load_config", "registry"]


class OptionError(Exception):
    """A bad option value met while parsing a command line (the message names the value and what is accepted).

    Not a ``ValueError``, so that the parser lets it through to the command line's own one-line error.
    """


@dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line."""

    name: str
    """The flag without its leading ``--``."""
    invert: bool = False
    """A bool field that the flag turns *off* (``--quiet`` sets ``progress=False``)."""
    parse: Callable[[Any], Any] | None = None
    """Text (or a YAML value) to the field's value, for values with their own notation (``--states 0-9``)."""
    show: Callable[[Any], str] = str
    """The field's value as command-line text."""
    choices: tuple[str, ...] | None = None
    """The accepted values of a string field (shown in the help)."""
    help: str | None = None
    """Help text when the field's docstring does not fit the flag (inverted flags)."""


def _commas(values: Any) -> str:
    return ",".join(str(v) for v in values)


def parse_log_formats(value: Any) -> tuple[str, ...]:
    """``--log-formats``: metric sinks like ``jsonl,csv,tensorboard,wandb`` (or a list).

    Raises:
        ValueError: naming the value and the accepted sinks.
    """
    items = list(value) if isinstance(value, (list, tuple)) else [v.strip() for v in str(value).split(",")]
    items = [str(v) for v in items if str(v)]
    bad = [v for v in items if v not in LOG_FORMATS]
    if bad or not items:
        raise ValueError(f"log formats {value!r} are not accepted: give a comma-separated list of {LOG_FORMATS}.")
    return tuple(items)


SECTIONS = ("demos", "sft", "rl", "ppo", "eval", "hf")
"""The parts of :class:`PipelineConfig`, each a config of its own (a mapping in YAML files)."""

OPTIONS: dict[type, dict[str, Flag | None]] = {
    PipelineConfig: {
        "task": Flag("task", parse=parse_task), "policy": Flag("policy"), "seed": Flag("seed"),
        "output_dir": Flag("output-dir"), "resume": Flag("resume"),
        "resume_or_start": Flag("resume-or-start"), "overwrite": Flag("overwrite"),
        "hidden": Flag("hidden", parse=parse_hidden, show=_commas),
        "method": Flag("method"),
        "alpha1": Flag("alpha1", help="weight of the step advantage (default None: the task's, "
                       + ", ".join("T{} {:g}/{:g}".format(t, *default_alphas(t)) for t in PAPER_ALPHAS)
                       + "; the paper's, except " + ", ".join(f"T{t}'s" for t in HELDOUT_ALPHAS)
                       + ", chosen on held-out placements)"),
        "alpha2": Flag("alpha2", help="weight of the trajectory advantage (default None: the task's, as "
                       "alpha1)"),
        "normalize_alphas": Flag("raw-alphas", invert=True, help="use alpha1 and alpha2 as given; by default the "
                                 "pair is divided by its sum, keeping its ratio"),
        "num_envs": Flag("num-envs"),
        "vectorization": Flag("vectorization"), "ray_address": Flag("ray-address"),
        "shared_placement": Flag("independent-placements", invert=True, help="each env of a group gets its own "
                                 "training placement (default: one shared placement)"),
        "video": Flag("video"), "video_state": Flag("video-state"), "video_interval": Flag("video-interval"),
        "snapshot_interval": Flag("snapshot-interval"), "select": Flag("select"),
        "select_placements": Flag("select-placements"), "select_points": Flag("select-points"),
        "progress": Flag("quiet", invert=True, help="no progress bars or per-iteration lines"),
        **{s: None for s in SECTIONS},
    },
    DemoConfig: {"num_demos": Flag("num-demos"), "demo_seed": Flag("demo-seed"), "demo_noise": Flag("demo-noise"),
                 "expert_close_steps": Flag("expert-close-steps"),
                 "expert_lift": Flag("expert-lift", choices=LIFT_RULES),
                 "demo_cache": Flag("demo-cache"), "demos_path": Flag("demos"), "workers": Flag("workers"),
                 "until": Flag("demo-until")},
    SFTConfig: {"epochs": Flag("sft-epochs"), "lr": Flag("sft-lr"), "batch_size": Flag("sft-batch-size"),
                "weight_decay": Flag("sft-weight-decay"), "max_grad_norm": Flag("sft-max-grad-norm")},
    TGRPOConfig: {
        "iterations": Flag("iterations"), "max_steps": Flag("max-steps"), "lr": Flag("lr"),
        "temperature": Flag("temperature"), "kl_beta": Flag("kl-beta"), "clip_eps": Flag("clip-eps"),
        "update_schedule": Flag("update-schedule", choices=UPDATE_SCHEDULES), "epochs": Flag("rl-epochs"),
        "minibatch_size": Flag("minibatch-size"), "rollout_mode": Flag("rollout-mode", choices=ROLLOUT_MODES),
        "ratio_level": Flag("ratio-level", choices=RATIO_LEVELS), "max_grad_norm": Flag("max-grad-norm"),
        "weight_decay": Flag("weight-decay"), "target_kl": Flag("target-kl"), "target_ref_kl": Flag("target-ref-kl"),
        "log_formats": Flag("log-formats", parse=parse_log_formats, show=_commas),
    },
    PPOConfig: {"epochs": Flag("ppo-epochs"), "gamma": Flag("ppo-gamma"), "gae_lambda": Flag("ppo-gae-lambda"),
                "vf_coef": Flag("ppo-vf-coef"), "ent_coef": Flag("ppo-ent-coef"),
                "value_max_grad_norm": Flag("ppo-value-max-grad-norm"),
                "normalize_value_targets": Flag("ppo-normalize-value-targets"),
                "env_step_budget": Flag("ppo-env-step-budget")},
    EvalConfig: {"states": Flag("states", parse=parse_states, show=format_states), "envs": Flag("eval-envs"),
                 "max_steps": Flag("eval-max-steps"), "temperature": Flag("eval-temperature")},
    HFConfig: {"device": Flag("device"), "dtype": Flag("dtype"), "trust_remote_code": Flag("trust-remote-code"),
               "unnorm_key": Flag("unnorm-key"), "lora_r": Flag("lora-r"), "lora_alpha": Flag("lora-alpha"),
               "gradient_checkpointing": Flag("gradient-checkpointing"),
               "micro_batch_size": Flag("micro-batch-size"), "image_size": Flag("image-size"),
               "recompute_old_log_probs": Flag("recompute-old-log-probs"), "static_cache": Flag("static-cache"),
               "compile_decoding": Flag("compile-decoding"), "compile_prefill": Flag("compile-prefill"),
               "merged_sampling": Flag("merged-sampling")},
}
"""The user options: for each config class, its option fields and their flags (``None``: a part)."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstrings under the fields of a dataclass and of its dataclass bases, one line each."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        for a, b in zip(body, body[1:]):
            if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)):
                docs[a.target.id] = " ".join(b.value.value.replace("``", "").split())
    return docs


# ---------------------------------------------------------------------------------------------- parser
def _parse_text(flag: Flag, text: str) -> Any:
    assert flag.parse is not None
    try:
        return flag.parse(text)
    except ValueError as e:
        raise OptionError(f"argument --{flag.name}: {e}") from None


def registry(visible: frozenset[str] | None = None) -> Any:
    """A tyro constructor registry that shows the :data:`OPTIONS` of each config class.

    Args:
        visible: the :class:`PipelineConfig` fields and parts a subcommand offers (None: all); the others keep
            the default instance's values.
    """
    import tyro
    from tyro.constructors import (
        ConstructorRegistry,
        PrimitiveConstructorSpec,
        StructConstructorSpec,
        StructFieldSpec,
    )

    reg = ConstructorRegistry()

    @reg.struct_rule
    def _rule(info: Any) -> Any:
        cls = info.type
        if cls not in OPTIONS:
            return None
        default = info.default if isinstance(info.default, cls) else cls()
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        specs = []
        inverted = set()
        for name, flag in OPTIONS[cls].items():
            if cls is PipelineConfig and visible is not None and name not in visible:
                continue
            value = getattr(default, name)
            if flag is None:  # a part: its own options, flags without a prefix
                specs.append(StructFieldSpec(name=name, type=Annotated[hints[name], tyro.conf.OmitArgPrefixes],
                                             default=value, helptext=docs.get(name)))
                continue
            typ: Any = hints[name]
            if flag.invert:
                inverted.add(name)
                value = not value
            elif flag.parse is not None:
                typ = Annotated[typ, PrimitiveConstructorSpec(
                    nargs=1, metavar=flag.name.upper(), instance_from_str=lambda a, f=flag: _parse_text(f, a[0]),
                    is_instance=lambda v: isinstance(v, (int, tuple)), str_from_instance=lambda v, f=flag: [f.show(v)])]
            elif flag.choices is not None:
                typ = Literal[flag.choices]  # type: ignore[valid-type]
            specs.append(StructFieldSpec(name=name, type=Annotated[typ, tyro.conf.arg(name=flag.name)],
                                         default=value, helptext=flag.help or docs.get(name)))

        def instantiate(**kw: Any) -> Any:
            for name in inverted:
                if name in kw:
                    kw[name] = not kw[name]
            try:
                return dataclasses.replace(default, **kw)
            except ValueError as e:
                raise OptionError(str(e)) from None

        return StructConstructorSpec(instantiate=instantiate, fields=tuple(specs))

    return reg


# ---------------------------------------------------------------------------------------------- command line
def _walk(cfg: PipelineConfig) -> list[tuple[type, str, Any]]:
    """``(class, field, value)`` of every option of ``cfg``, the parts' after the pipeline's own."""
    out = [(PipelineConfig, name, getattr(cfg, name)) for name, f in OPTIONS[PipelineConfig].items() if f]
    for section in SECTIONS:
        part = getattr(cfg, section)
        out += [(type(part), name, getattr(part, name)) for name in OPTIONS[type(part)]]
    return out


def _flag_text(flag: Flag, value: Any) -> list[str]:
    if isinstance(value, bool):
        on = value != flag.invert
        return [f"--{flag.name}" if on else f"--no-{flag.name}"]
    if value is None:
        return [f"--{flag.name}", "None"]
    return [f"--{flag.name}", flag.show(value)]


def command_line(cfg: PipelineConfig, command: str = "run", base: PipelineConfig | None = None,
                 visible: frozenset[str] | None = None) -> str:
    """The ``libero-tgrpo COMMAND`` line that gives ``cfg``: the options that differ from ``base``.

    Args:
        cfg: the config to reproduce.
        command: the subcommand.
        base: the config without flags (default: ``PipelineConfig()``).
        visible: the pipeline fields and parts the subcommand offers (None: all).
    """
    base_items = _walk(base if base is not None else PipelineConfig())
    parts = ["libero-tgrpo", command]
    for (cls, name, value), (_, _, default) in zip(_walk(cfg), base_items):
        if value == default:
            continue
        if cls is PipelineConfig and visible is not None and name not in visible:
            continue
        parts += _flag_text(OPTIONS[cls][name], value)  # type: ignore[arg-type]
    return " ".join(shlex.quote(p) for p in parts)


# ---------------------------------------------------------------------------------------------- YAML
def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def options_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """Every option of ``cfg`` by field name, the parts as nested mappings (the YAML config file's content)."""
    out: dict[str, Any] = {}
    for name, flag in OPTIONS[PipelineConfig].items():
        if flag is not None:
            out[name] = _plain_option(flag, getattr(cfg, name))
    for section in SECTIONS:
        part = getattr(cfg, section)
        out[section] = {name: _plain_option(OPTIONS[type(part)][name], getattr(part, name))
                        for name in OPTIONS[type(part)]}
    return out


def _plain_option(flag: Flag | None, value: Any) -> Any:
    """A value as YAML shows it: in its command-line notation when it has one (``states: all``)."""
    if flag is not None and flag.parse is not None and isinstance(value, tuple):
        return flag.show(value)
    return _plain(value)


def _convert(cls: type, name: str, value: Any, source: str) -> Any:
    flag = OPTIONS[cls].get(name)
    if flag is not None and flag.parse is not None:
        return flag.parse(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def from_options(options: dict[str, Any], base: PipelineConfig | None = None, source: str = "options") -> PipelineConfig:
    """``base`` with the options of a mapping like :func:`options_dict`'s (any subset) applied; checked.

    Raises:
        ConfigError: for an option that does not exist (naming it and the accepted ones) or a bad value.
    """
    try:
        return _from_options(options, base, source)
    except ValueError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None


def _from_options(options: dict[str, Any], base: PipelineConfig | None, source: str) -> PipelineConfig:
    base = base if base is not None else PipelineConfig()
    if not isinstance(options, dict):
        raise ConfigError(f"{source}: expected a mapping of options, got {type(options).__name__}.")
    accepted = list(OPTIONS[PipelineConfig])
    top: dict[str, Any] = {}
    for key, value in options.items():
        if key not in OPTIONS[PipelineConfig]:
            raise ConfigError(f"{source}: unknown option {key!r}; accepted are {', '.join(accepted)}.")
        if key in SECTIONS:
            part = getattr(base, key)
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key!r} must be a mapping of its options, got {value!r}.")
            unknown = [k for k in value if k not in OPTIONS[type(part)]]
            if unknown:
                raise ConfigError(f"{source}: unknown option {key}.{unknown[0]}; accepted in {key!r} are "
                                  f"{', '.join(OPTIONS[type(part)])}.")
            top[key] = dataclasses.replace(part, **{k: _convert(type(part), k, v, source) for k, v in value.items()})
        else:
            top[key] = _convert(PipelineConfig, key, value, source)
    return dataclasses.replace(base, **top)


def save_config(cfg: PipelineConfig, path: str | Path, command: str = "run") -> Path:
    """Write ``cfg``'s options as a YAML config file that ``libero-tgrpo COMMAND --config PATH`` reads back."""
    import yaml

    from libero_tgrpo.files import write_text

    head = f"# libero-tgrpo {command} --config {path}\n"
    return write_text(path, head + yaml.safe_dump(options_dict(cfg), sort_keys=False))


def load_config(path: str | Path, base: PipelineConfig | None = None) -> PipelineConfig:
    """``base`` with the options of a YAML config file applied (see :func:`from_options`).

    Raises:
        ConfigError: if the file is missing, is not YAML, or holds an unknown option or a bad value.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        options = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    return from_options(options, base, source=str(path))
