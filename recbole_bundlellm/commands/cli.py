"""``bundlellm`` command line: data, runs, comparisons and benchmarks, distillation and the
knowledge store, plugins, and the embedded teacher server."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


DEFAULT_DATA = "dataset"

#: The epilog of the commands that take config overrides.
OVERRIDES_HELP = """\
config overrides:
  Any config key can be set after the options as --key=value (the value is read as YAML), e.g.
    --eval_max_sessions=20 --metrics='[ExactF1, BestJaccard]' --teacher='{base_url: http://127.0.0.1:8088/v1}'
  Overrides win over the -c files. A settings block (teacher, sampling, each plugin component's key)
  is merged key by key with the files' block; other keys replace the files' value.
  A key you set (in a -c file or as --key=value) that the model does not read is an error naming the
  models that read it. compare's and benchmark's overrides reach only the runs whose model reads them."""


def _add_data_commands(sub: Any) -> None:
    data = sub.add_parser("data", help="prepare or download the bundle datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="raw SIGIR 2022 files -> RecBole atomic files")
    prep.add_argument("--raw", help="raw data root (<root>/<domain>/*.csv); default $BUNDLELLM_RAW_DATA")
    prep.add_argument("--out", default=None, help="output root; default $BUNDLELLM_DATA or ./dataset")
    prep.add_argument("--domain", action="append", help="electronic, clothing or food (repeatable; default all)")
    prep.add_argument("--seed", type=int, default=2024, help="seed of the clothing/food split")
    prep.add_argument("--force", action="store_true", help="re-prepare even if up to date")
    prep.add_argument("--category-predictor", default="linear", choices=["linear", "nearest"],  # see data.CATEGORY_PREDICTORS
                      help="title -> category for items outside training bundles: a linear classifier "
                           "(default) or the 1-nearest-neighbour of earlier versions")
    down = dsub.add_parser("download", help="fetch and verify the raw files from the upstream repository")
    down.add_argument("--dest", required=True, help="raw data root to write")
    down.add_argument("--domain", action="append", help="domain (repeatable; default all)")
    down.add_argument("--base-url", default=None, help="mirror of the upstream dataset/ folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bundlellm", description=__doc__)
    parser.add_argument("--strict", action="store_true",
                        help="a plugin that fails to load is an error (also: BUNDLELLM_STRICT_PLUGINS=1)")
    parser.add_argument("--debug", action="store_true",
                        help="full tracebacks: of a plugin that fails to load (also in `bundlellm plugins`) "
                             "and of an error (also: BUNDLELLM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)

    run = sub.add_parser("run", help="run one model on one dataset (RecBole config files and --key=value overrides)",
                         epilog=OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("-c", "--config", action="append", default=[], help="YAML config file (repeatable, merged)")
    run.add_argument("--model", help="model name (overrides the config's `model`)")
    run.add_argument("--dataset", help="dataset name (overrides the config's `dataset`)")
    run.add_argument("--full", action="store_true", help="evaluate every test session (eval_max_sessions: ~)")
    run.add_argument("--output-dir", help="where to write config, metrics and predictions")

    cmp_ = sub.add_parser("compare", help="run several configs and print one comparison table",
                          epilog=OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp_.add_argument("configs", nargs="+", help="one YAML config file per run")
    cmp_.add_argument("--floors", action="store_true", help="add the four label-free floors to the table")
    cmp_.add_argument("--full", action="store_true", help="evaluate every test session")
    cmp_.add_argument("--out", help="write the table (.md) and results (.json) with this path stem")

    _add_benchmark_command(sub)
    _add_plan_command(sub)
    sub.add_parser("models", help="list the models the registry resolves")
    experts = sub.add_parser("experts", help="list the trained LoRA experts (adapters of BundleSFT runs) of a base "
                                             "model, for RouteDK's `experts:`")
    experts.add_argument("--root", default="outputs", help="folder searched for adapters (default: outputs)")
    experts.add_argument("--llm-model", default="embedded", help="the base model (default: embedded)")
    _add_knowledge_commands(sub)
    return parser


#: The epilog of `bundlellm benchmark`: the cluster, resources and what resumes.
BENCHMARK_EPILOG = """\
on a SLURM cluster:
  bundlellm benchmark -c grid.yaml --executor submitit --plan   # what would be submitted, with resources
  bundlellm benchmark -c grid.yaml --executor submitit          # one job per cell, waits, then the tables
  Each cell not yet finished is one submitit job (logs and job ids under <out>/submitit). A job
  runs the same cell function as --executor local into the same content-keyed folder, so cells
  finished on the cluster and here are one result set. A killed or interrupted command, run again,
  reuses finished cells and waits for jobs still queued or running (it does not resubmit them);
  a cell whose job failed or timed out is submitted again.
resources (grid YAML; a method's own keys win over the grid's, key by key):
  resources: {cpus: 4, mem_gb: 16, timeout_min: 60}
  methods:
    - {name: SFT, config: configs/{dataset}/sft.yaml, resources: {gpus: 1, partition: gpu, slurm: {qos: high}}}
  keys: gpus (0), cpus (1), mem_gb (the cluster's default), timeout_min (60), partition, slurm (other
  sbatch settings: account, qos, constraint, ...). --executor local ignores them."""


def _add_benchmark_command(sub: Any) -> None:
    bench = sub.add_parser("benchmark", help="a grid of methods x datasets x seeds: tables (CSV, Markdown) and plots; "
                                             "finished cells are reused",
                           description="A grid of methods x datasets x seeds. A finished cell is reused while its "
                                       "configuration, data, model code and the contents of what it reads (the LLM's "
                                       "weights, adapters, experts, the knowledge store) are unchanged: a model or store "
                                       "changed in place runs its cells again. --out never overwrites tables it did not write.",
                           epilog=BENCHMARK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("-c", "--config", default=None,
                       help="benchmark YAML (default: configs/benchmarks/baselines.yaml)")
    bench.add_argument("--seeds", help="comma-separated seeds, replacing the file's (e.g. 0,1,2)")
    bench.add_argument("--datasets", help="comma-separated datasets, replacing the file's")
    bench.add_argument("--out", help="output folder (default: the file's output_dir, else outputs/benchmarks/<name>)")
    bench.add_argument("--plan", action="store_true",
                       help="list the cells (to run or reused, method, dataset, seed, key, resources) and the "
                            "totals; run nothing")
    # The choices are executor.EXECUTORS (not imported here: the parser stays quick to build).
    bench.add_argument("--executor", default="local", choices=["local", "submitit", "submitit-debug"],
                       help="local (default): the cells one after the other on this machine, `resources:` ignored; "
                            "submitit: one job per cell with its `resources:` (SLURM where sbatch is found, else "
                            "submitit's local executor, all jobs at once), then waits for them; submitit-debug: "
                            "the jobs in this process, one after the other (needs: pip install "
                            "'recbole-bundlellm[cluster]')")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_plan_command(sub: Any) -> None:
    plan = sub.add_parser("plan", help="a student's parameters, memory, tokens per epoch and training time, "
                                       "before training it",
                          description="For a student that fine-tunes (BundleSFT, PairSFT, RouteDK): parameters, "
                                      "trainable parameters, the estimated memory of a training step (weights, adapters, "
                                      "gradients, AdamW states, activations at the longest batch), tokens per epoch "
                                      "from the model's own training examples, and a time estimate from a few real "
                                      "training steps. With --model-config the architecture is built on the meta "
                                      "device (no weights, no memory, nothing timed): a model too large for this "
                                      "machine plans here.",
                          epilog=OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    plan.add_argument("-c", "--config", action="append", default=[], help="YAML config file (repeatable, merged)")
    plan.add_argument("--model", help="model name (overrides the config's `model`)")
    plan.add_argument("--dataset", help="dataset name (overrides the config's `dataset`)")
    plan.add_argument("--warmup-steps", type=int, default=3,
                      help="real training steps timed for the time estimate (default 3; 0: none)")
    plan.add_argument("--model-config", help="a transformers config.json (or its folder): plan that architecture "
                                             "on the meta device instead of loading llm_model and the data")
    plan.add_argument("--seq-len", type=int, help="with --model-config: tokens per training example "
                                                  "(default: max_seq_tokens)")
    plan.add_argument("--json", help="also write the plan as JSON to this file")


def _add_knowledge_commands(sub: Any) -> None:
    dist = sub.add_parser("distill", help="extract knowledge from the training sessions (teacher, store, sampling)",
                          epilog=OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    dist.add_argument("-c", "--config", action="append", default=[], help="YAML config file (repeatable, merged)")
    dist.add_argument("--dataset", help="dataset name (overrides the config's `dataset`)")
    dist.add_argument("--no-progress", action="store_true", help="no progress bars")

    know = sub.add_parser("knowledge", help="inspect or export a knowledge store")
    ksub = know.add_subparsers(dest="knowledge_command", required=True)
    for name, text in (("show", "summarize the store, or print records"), ("export", "write records to a file")):
        p = ksub.add_parser(name, help=text)
        p.add_argument("--dir", default=None, help="store folder (default: knowledge_dir of -c, else ./knowledge)")
        p.add_argument("-c", "--config", action="append", default=[], help="take knowledge_dir from this YAML")
        p.add_argument("--kind", help="knowledge type (patterns, rules, thoughts, ...)")
        p.add_argument("--domain", help="dataset / domain")
        p.add_argument("--session", help="one session id")
        p.add_argument("--fingerprint", help="configuration fingerprint (prefix)")
        p.add_argument("--status", default="all" if name == "show" else "ok", choices=["ok", "failed", "all"])
    ksub.choices["show"].add_argument("-n", "--limit", type=int, default=None, help="print at most N records")
    ksub.choices["export"].add_argument("--out", required=True, help="output file")
    ksub.choices["export"].add_argument("--format", default="jsonl", choices=["jsonl", "json"])

    sub.add_parser("plugins", help="list plugins: name, version, distribution, hooks, status")

    teacher = sub.add_parser("teacher", help="the embedded teacher (an OpenAI-compatible server)")
    tsub = teacher.add_subparsers(dest="teacher_command", required=True)
    serve = tsub.add_parser("serve", help="serve the embedded GGUF (or --model) on 127.0.0.1")
    serve.add_argument("--model", default=None, help="a .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8088)
    serve.add_argument("--n-ctx", type=int, default=2048, help="context window in tokens")
    serve.add_argument("--n-threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    check = tsub.add_parser("check", help="start the embedded server once and ask it one short completion")
    check.add_argument("--model", default=None, help="a .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    check.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")


def _prepare(args: argparse.Namespace) -> int:
    from recbole_bundlellm.data import DOMAINS, default_raw_root, prepare

    raw = Path(args.raw) if args.raw else default_raw_root()
    if raw is None:
        print("error: give --raw DIR or set $BUNDLELLM_RAW_DATA (or run `bundlellm data download`)",
              file=sys.stderr)
        return 2
    out = Path(args.out or os.environ.get("BUNDLELLM_DATA") or DEFAULT_DATA)
    cards = prepare(raw, out, args.domain or DOMAINS, seed=args.seed, force=args.force,
                    category_predictor=args.category_predictor)
    for domain, card in cards.items():
        print(f"{domain}: prepared in {out / domain} ({_card_line(card)})")
    return 0


def _card_line(card: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in card["counts"]["sessions_per_split"].items())


def _download(args: argparse.Namespace) -> int:
    from recbole_bundlellm.data import DOMAINS, download

    paths = download(Path(args.dest), args.domain or DOMAINS, base_url=args.base_url)
    print(f"{len(paths)} raw files verified under {args.dest}")
    return 0


def _split_overrides(extra: Sequence[str]) -> dict[str, Any]:
    from recbole_bundlellm.config import ConfigError, parse_overrides

    bad = [e for e in extra if not e.startswith("--") or "=" not in e]
    if bad:
        raise ConfigError(f"unrecognized arguments: {' '.join(bad)} (overrides are --key=value)")
    return parse_overrides(extra)


def _host(args: argparse.Namespace, config_groups: Sequence[Sequence[str]] = (),
          overrides: dict[str, Any] | None = None) -> Any:
    """This command's one plugin host (see :func:`recbole_bundlellm.config.host_for_runs`)."""
    from recbole_bundlellm.config import host_for_runs

    return host_for_runs(config_groups, overrides, strict=args.strict)


def _compare(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from recbole_bundlellm.commands.compare import compare, format_results, incomparable_counts, write_results

    if args.full:
        overrides["eval_max_sessions"] = None
    host = _host(args, [[path] for path in args.configs], overrides)
    results = compare(args.configs, overrides, floors=args.floors, host=host)
    text = format_results(results)
    print(text, end="")
    _warn_truncated_prompts(results)
    if args.out:
        write_results(results, text, args.out)
    scored = incomparable_counts(results)
    if scored:
        print("warning: the runs scored different numbers of sessions, so their rows are not comparable: "
              + ", ".join(f"{k} {v}" for k, v in scored.items()), file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from recbole_bundlellm.commands.compare import format_results
    from recbole_bundlellm.commands.runner import run_config

    if args.full:
        overrides["eval_max_sessions"] = None
    result = run_config(args.config, overrides, model=args.model, dataset=args.dataset,
                        output_dir=args.output_dir, host=_host(args, [args.config], overrides))
    from recbole_bundlellm.training.distributed import launched_rank

    if launched_rank() != 0:  # under torchrun every process has the same results: rank 0 shows them
        return 0
    print(format_results([result]), end="")
    _warn_truncated_prompts([result])
    print(f"outputs: {result.output_dir}")
    return 0


def _comma_list(text: str | None, kind: type, option: str) -> list[Any] | None:
    from recbole_bundlellm.commands.benchmark.spec import BenchmarkError

    if text is None:
        return None
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchmarkError(f"{option} takes a comma-separated list, got {text!r}") from None


def _benchmark(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from recbole_bundlellm.commands.benchmark.cells import describe_plan, plan
    from recbole_bundlellm.commands.benchmark.executor import run_benchmark
    from recbole_bundlellm.commands.benchmark.spec import DEFAULT_BENCHMARK, load_benchmark

    spec = load_benchmark(args.config or DEFAULT_BENCHMARK, overrides, seeds=_comma_list(args.seeds, int, "--seeds"),
                          datasets=_comma_list(args.datasets, str, "--datasets"), output_dir=args.out)
    if args.plan:
        print("\n".join(describe_plan(spec, plan(spec), args.executor)))
        return 0
    command = shlex.join(["bundlellm", *args.argv])  # the tables name it, to be rerun as is
    result = run_benchmark(spec, strict=args.strict, progress=False if args.no_progress else None, command=command,
                           executor=args.executor)
    print(result.files["markdown"].read_text(encoding="utf-8"), end="")
    print(f"{len(result.ran)} cells run, {len(result.reused)} reused; tables: {result.files['csv']}, "
          f"{result.files['markdown']}; plots: {spec.output_dir / 'plots'}")
    return 0


def _plan(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import json

    from recbole_bundlellm.commands.plan import plan
    from recbole_bundlellm.commands.runner import resolve_config

    config = resolve_config(args.config, overrides, model=args.model, dataset=args.dataset,
                            host=_host(args, [args.config], overrides))
    report = plan(config, warmup_steps=args.warmup_steps, model_config=args.model_config, seq_len=args.seq_len)
    print(report.format(), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0


def _warn_truncated_prompts(results: Sequence[Any]) -> None:
    """One warning line per run whose prompts max_prompt_tokens cut: its scores are of shortened
    sessions, which run.log alone would hide."""
    for result in results:
        stats = result.info.get("generation") or {}
        if stats.get("truncated_prompts"):
            print(f"warning: {result.run_name}: {stats['truncated_prompts']} of {stats['prompts']} prompts were "
                  f"longer than max_prompt_tokens={result.info.get('max_prompt_tokens')} and were cut from the "
                  "left (metrics.json: info.generation.truncated_prompts)", file=sys.stderr)


def _models(args: argparse.Namespace) -> int:
    for spec in _host(args).models.specs():
        print(f"{spec.name:12s} {spec.origin:10s} {spec.description}")
    print("... and every RecBole model by its RecBole name (e.g. BPR, SASRec), on a <domain>_next dataset")
    return 0


def _experts(args: argparse.Namespace) -> int:
    from recbole_bundlellm.llm.lora import BaseModelId
    from recbole_bundlellm.fusion.experts import ExpertStore
    from recbole_bundlellm.llm import model_content_hash
    from recbole_bundlellm.llm.loading import resolve_model_folder

    folder = resolve_model_folder(args.llm_model)
    store = ExpertStore(args.root, BaseModelId(str(folder), model_content_hash(folder)))
    found = store.experts()
    print(f"{len(found)} experts of {args.llm_model} under {args.root}" + (":" if found else ""))
    for expert in found:
        score = "-" if expert.valid_score is None else f"{expert.valid_score:.4f}"
        print(f"  {expert.kind:18s} valid {score:7s} {expert.fingerprint[:12]:12s} {expert.folder}")
    others = store.other_bases()
    if others:
        print(f"({others} adapters of other base models left out)")
    return 0


#: What an interrupted command leaves behind, for the one line Ctrl-C prints.
_INTERRUPTED_NOTES = {
    "run": "nothing written (an earlier run's folder is left as it was)",
    "compare": "runs that finished kept their outputs; nothing of the interrupted one was written",
    "distill": "the knowledge store keeps every finished call and record; run the same command again to resume",
    "benchmark": "finished cells are kept; run the same command again to run only the others",
}


def _one_line_plugin_warnings() -> None:
    """A plugin warning prints once, as ``warning: <what>`` (no source line of ours): the host both
    warns (for library users and tests) and logs (for logs); on the console one of them is enough.
    Installed once per process (``main`` may be called many times, e.g. by tests)."""
    import logging
    import warnings

    from recbole_bundlellm.extension.host import PluginWarning

    if getattr(warnings.showwarning, "_one_line_plugin_warnings", False):
        return
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, PluginWarning):
            print(f"warning: {message}", file=sys.stderr)
            return
        shown(message, category, filename, lineno, file, line)

    show._one_line_plugin_warnings = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    logger = logging.getLogger("recbole_bundlellm.extension.host")
    if not any(getattr(f, "_one_line_plugin_warnings", False) for f in logger.filters):
        def drop(record: logging.LogRecord) -> bool:
            return record.levelno != logging.WARNING

        drop._one_line_plugin_warnings = True  # type: ignore[attr-defined]
        logger.addFilter(drop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bundlellm`` command; user errors print one line and exit 2, Ctrl-C
    prints one line and exits 130 (128 + SIGINT, as shells do)."""
    from recbole_bundlellm.errors import BundleLLMError
    from recbole_bundlellm.extension.host import DEBUG_ENV, debug_enabled

    args = None
    _one_line_plugin_warnings()
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if args.debug:
            os.environ[DEBUG_ENV] = "1"  # the plugin host reads it (tracebacks of failed plugins)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return _dispatch(parser, args, extra)
    except BundleLLMError as exc:  # the user's to fix: one line, no traceback (unless --debug)
        if debug_enabled():
            import traceback

            traceback.print_exc(file=sys.stderr)
        print(f"error: {exc if not isinstance(exc, KeyError) else exc.args[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # A command that caught Ctrl-C to say what it kept (distill) raises it again with that text.
        note = _INTERRUPTED_NOTES.get(getattr(args, "command", None))
        print(f"error: {str(exc) or 'interrupted' + ('; ' + note if note else '')}", file=sys.stderr)
        return 130


def _distill(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from recbole_bundlellm.commands.distill import distill

    if args.dataset:
        overrides["dataset"] = args.dataset
    summary = distill(args.config, overrides, progress=False if args.no_progress else None,
                      host=_host(args, [args.config], overrides))
    print(summary.format())
    return 0


def _store_dir(args: argparse.Namespace) -> Path:
    if args.dir:
        return Path(args.dir)
    from recbole_bundlellm.config import load_yaml_files

    return Path(load_yaml_files(args.config).get("knowledge_dir") or "knowledge")


def _knowledge(args: argparse.Namespace) -> int:
    from recbole_bundlellm.knowledge import inspect
    from recbole_bundlellm.knowledge.store import KnowledgeStore, StoreError

    root = _store_dir(args)
    if not root.is_dir():
        raise StoreError(f"no knowledge store at {root} (run `bundlellm distill` first, or pass --dir)")
    store = KnowledgeStore(root)
    filters = dict(kind=args.kind, domain=args.domain, status=args.status, session=args.session,
                   fingerprint=args.fingerprint)
    if args.knowledge_command == "export":
        n = inspect.export_records(inspect.select_records(store, **filters), Path(args.out), args.format)
        print(f"{n} records written to {args.out}")
        return 0
    if any(v is not None for k, v in filters.items() if k != "status") or args.limit is not None:
        n = inspect.show_records(inspect.select_records(store, **filters), args.limit, sys.stdout)
        print(f"({n} records)", file=sys.stderr)
    else:
        print(inspect.overview(store))
    return 0


def _teacher(args: argparse.Namespace) -> int:
    from recbole_bundlellm.teacher.server import check_server, serve

    if args.teacher_command == "check":
        print(check_server(args.model, timeout=args.timeout))
        return 0
    return serve(args.model, host=args.host, port=args.port, n_ctx=args.n_ctx, n_threads=args.n_threads)


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: Sequence[str]) -> int:
    if args.command in ("data", "knowledge", "plugins", "teacher", "experts", "models") and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "data":
        return _prepare(args) if args.data_command == "prepare" else _download(args)
    if args.command == "models":
        return _models(args)
    if args.command == "experts":
        return _experts(args)
    if args.command == "plugins":
        from recbole_bundlellm.extension.host import debug_enabled, format_statuses

        print(format_statuses(_host(args), tracebacks=debug_enabled()))
        return 0
    if args.command == "knowledge":
        return _knowledge(args)
    if args.command == "teacher":
        return _teacher(args)
    overrides = _split_overrides(extra)
    if args.command == "distill":
        return _distill(args, overrides)
    if args.command == "run":
        return _run(args, overrides)
    if args.command == "benchmark":
        return _benchmark(args, overrides)
    if args.command == "plan":
        return _plan(args, overrides)
    return _compare(args, overrides)


if __name__ == "__main__":
    sys.exit(main())
