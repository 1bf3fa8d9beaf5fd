"""The plugin contract: every hook a plugin may implement.

A plugin is a module (or object) exposed through the ``recbole_bundlellm`` entry-point group
whose functions are decorated with :data:`hookimpl`. Registration hooks receive a ``register``
callable and call it once per component; they return nothing. A plugin implements only the hooks
it needs and may accept a subset of a hook's arguments (pluggy matches them by name).

Each hook is documented, with its exact signature, in ``docs/plugins.md``; a test checks that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # annotations only: importing these here would import RecBole and torch
    from recbole_bundlellm.adaptation import AdaptationStrategy
    from recbole_bundlellm.fusion import FusionRouter
    from recbole_bundlellm.generation.backend import GenerationBackend
    from recbole_bundlellm.knowledge.summary import DistillPlan, DistillSummary
    from recbole_bundlellm.knowledge.extractor import KnowledgeExtractor
    from recbole_bundlellm.knowledge.records import KnowledgeRecord
    from recbole_bundlellm.extension.host import PluginHost
    from recbole_bundlellm.extension.registry import ModelSpec
    from recbole_bundlellm.evaluation.results import RunResult
    from recbole_bundlellm.sampling.sampler import Sampler

PROJECT = "recbole_bundlellm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration ----------------------------------------------------------------------------
@hookspec
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register bundle models (RecBole models) in the model registry.

    :param register: call ``register(ModelSpec(name, "module:Class", config_files, trainer))``
        once per model. A name that clashes with a RecBole model or another plugin's model is
        refused and the plugin is reported as failed.
    """


@hookspec
def register_metrics(register: Callable[[type], None]) -> None:
    """Register RecBole metric classes (subclasses of ``recbole.evaluator.base_metric.AbstractMetric``).

    A bundle metric reads ``bundle.pred`` (per session a list of frozensets of item ids, as the
    model answered, or ``None`` for a failed session), ``bundle.truth`` and ``bundle.items`` from
    the ``DataStruct``, has ``metric_type = EvaluatorType.RANKING`` and returns one value keyed by
    its lower-cased class name; see ``docs/plugins.md`` (Metrics).

    :param register: call ``register(MetricClass)`` once per metric; afterwards the metric's
        class name works in ``metrics:`` and ``valid_metric:``.
    """


@hookspec
def register_knowledge_extractors(register: Callable[[type[KnowledgeExtractor]], None]) -> None:
    """Register knowledge extractors (subclasses of
    :class:`recbole_bundlellm.knowledge.extractor.KnowledgeExtractor`).

    :param register: call ``register(ExtractorClass)`` once per extractor; its ``name`` is the
        knowledge type used in ``knowledge_types:`` and the YAML key of its settings.
    """


@hookspec
def register_samplers(register: Callable[[type[Sampler]], None]) -> None:
    """Register samplers (subclasses of :class:`recbole_bundlellm.sampling.sampler.Sampler`).

    :param register: call ``register(SamplerClass)`` once per sampler; its ``name`` is used in
        ``sampling: {sampler: ...}`` and is the YAML key of its settings.
    """


@hookspec
def register_adaptation_strategies(register: Callable[[type[AdaptationStrategy]], None]) -> None:
    """Register adaptation strategies (subclasses of
    :class:`recbole_bundlellm.adaptation.AdaptationStrategy`).

    A strategy chooses what the student sees for each session: ``prepare(context)`` once with an
    :class:`~recbole_bundlellm.adaptation.AdaptationContext` (training sessions, knowledge set,
    the student's prompt measure and budget), then ``views(sessions, training=...)`` gives one
    :class:`~recbole_bundlellm.adaptation.StudentView` per session (scored examples and knowledge
    lines, and a training target's reasoning). ``fine_tunes`` says whether the model trains LoRA
    adapters on the training views.

    :param register: call ``register(StrategyClass)`` once per strategy; its ``name`` is the
        strategy's config name and the YAML key of its settings.
    """


@hookspec
def register_fusion_routers(register: Callable[[type[FusionRouter]], None]) -> None:
    """Register fusion routers (subclasses of :class:`recbole_bundlellm.fusion.FusionRouter`).

    A router mixes a base model's LoRA experts per input: ``build(experts, input_size,
    n_layers)`` returns a ``torch.nn.Module`` mapping an input representation ``[batch,
    input_size]`` to weights over ``experts`` that sum to 1 (``[batch, n_experts]``, or
    ``[batch, n_layers, n_experts]`` per LoRA layer); the core applies them
    (:class:`recbole_bundlellm.fusion.mixture.MixtureOfLoRA`) and trains the module when the
    class's ``trainable`` is true.

    :param register: call ``register(RouterClass)`` once per router; its ``name`` is the
        router's config name and the YAML key of its settings.
    """


@hookspec
def register_generation_backends(register: Callable[[type[GenerationBackend]], None]) -> None:
    """Register generation backends (subclasses of
    :class:`recbole_bundlellm.generation.backend.GenerationBackend`).

    A backend answers the student's chat prompts: ``open(context)`` once with a
    :class:`~recbole_bundlellm.generation.backend.GenerationContext` (the model's decoding
    settings and, for a backend whose ``in_process`` is true, the student's model and tokenizer),
    then ``generate(prompts)`` gives per prompt a list of completions; batching, stop strings,
    retries and caching are its own. ``stats`` and ``describe()`` go to the run's metrics.

    :param register: call ``register(BackendClass)`` once per backend; its ``name`` is the value
        of ``generation_backend`` and the YAML key of its settings.
    """


# -- lifecycle ------------------------------------------------------------------------------
@hookspec
def plugins_loaded(host: PluginHost) -> None:
    """Called once after every plugin has been loaded and registered.

    :param host: the :class:`recbole_bundlellm.extension.host.PluginHost`; read its registries and
        ``statuses`` (e.g. to check that a component you depend on is present).
    """


@hookspec
def distill_started(plan: DistillPlan) -> None:
    """Called before a distillation extracts anything.

    :param plan: the :class:`recbole_bundlellm.knowledge.summary.DistillPlan` (domain, knowledge
        types, sessions, store folder, teacher settings without the API key).
    """


@hookspec
def knowledge_record_stored(record: KnowledgeRecord) -> None:
    """Called after a new knowledge record has been written durably to the store.

    :param record: the :class:`recbole_bundlellm.knowledge.records.KnowledgeRecord` (``ok`` or
        ``failed``). Called from worker threads when the teacher runs concurrently.
    """


@hookspec
def distill_finished(summary: DistillSummary) -> None:
    """Called when a distillation has finished, with its summary.

    :param summary: the :class:`recbole_bundlellm.knowledge.summary.DistillSummary` (records per
        type, failures, calls made and served from the store, tokens, cost, time).
    """


@hookspec
def run_finished(result: RunResult) -> None:
    """Called after ``bundlellm run`` (or :func:`recbole_bundlellm.commands.runner.run`) wrote its outputs.

    :param result: the :class:`recbole_bundlellm.evaluation.results.RunResult`.
    """


def hook_names() -> list[str]:
    """The names of every hook in this module, in definition order."""
    return [name for name, value in globals().items()
            if callable(value) and hasattr(value, f"{PROJECT}_spec")]


def hook_signature(name: str) -> str:
    """A hook's signature as the docs write it, e.g. ``plugins_loaded(host: PluginHost) -> None``."""
    import inspect

    fn = globals()[name]
    params = ", ".join(f"{p.name}: {p.annotation}" for p in inspect.signature(fn).parameters.values())
    return f"{name}({params}) -> {inspect.signature(fn).return_annotation}"
