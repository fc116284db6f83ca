"""The ``streamguard`` command (DESIGN.md section 4): demo, run, simulate, eval, review."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from streamguard import logs
from streamguard.config import ConfigError, Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    kafka = {
        key: getattr(args, key, None)
        for key in ("bootstrap_servers", "input_topic", "group_id")
        if getattr(args, key, None)
    }
    if kafka:
        overrides["kafka"] = kafka
    if getattr(args, "http_port", None) is not None:
        overrides["http"] = {"port": args.http_port}
    return load_settings(args.config, overrides)


def cmd_demo(args: argparse.Namespace) -> int:
    from streamguard.demo import run_demo

    settings = _settings(args)
    logs.configure(settings.log_level, "text")
    stop = threading.Event()
    try:
        review_port = args.review_port if args.review_port is not None else settings.review.port
        return run_demo(
            settings, args.events, args.scenario, args.seed, args.db, stop, args.linger, review_port
        )
    except KeyboardInterrupt:
        return 0


def cmd_run(args: argparse.Namespace) -> int:
    from streamguard.assembly import build_pipeline
    from streamguard.metrics import Metrics
    from streamguard.probes import Liveness, ProbeServer
    from streamguard.service import Service

    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    metrics = Metrics()
    liveness = Liveness()
    server = ProbeServer(settings.http.host, settings.http.port, metrics.registry, liveness).start()
    service = Service(settings, build_pipeline(settings), metrics, liveness)
    metrics.watch(service.pipeline)  # after Service may have swapped in a restored checkpoint
    service.install_signal_handlers()
    try:
        return service.run()
    finally:
        server.stop()


def cmd_simulate(args: argparse.Namespace) -> int:
    from streamguard.simulate import SCENARIOS, simulate, write_simulation

    if args.scenario == "list":
        for name, description in SCENARIOS.items():
            print(f"{name}\t{description}")
        return 0
    if args.out is None:
        raise SystemExit("simulate: --out DIR is required")
    sim = simulate(args.scenario, args.events, args.seed, base=args.base)
    args.out.mkdir(parents=True, exist_ok=True)
    write_simulation(sim, args.out)
    poisoned = sum(t.poisoned for t in sim.truth)
    print(f"wrote {len(sim.events)} events ({poisoned} poisoned) to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from streamguard.evaluate import evaluate_file

    settings = _settings(args)
    logs.configure(settings.log_level, "text")
    metrics = evaluate_file(
        args.events,
        args.truth,
        args.out,
        settings,
        bootstrap_servers=args.bootstrap_servers,
        batch_size=args.batch_size,
    )
    o = metrics["overall"]
    print(
        f"events {metrics['events']}: precision {o['precision']:.3f} recall {o['recall']:.3f} "
        f"fpr {o['fpr']:.4f} f1 {o['f1']:.3f}; {metrics['throughput_eps']:,.0f} events/s"
    )
    print(f"wrote {args.out}/metrics.json, verdicts.csv, report.html")
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from streamguard.evaluate import run_matrix

    settings = _settings(args)
    logs.configure(settings.log_level, "text")
    print(run_matrix(settings, args.scenarios, args.seeds, args.bases, args.events, args.out))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from streamguard.quarantine.store import QuarantineStore

    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    store = QuarantineStore(args.db or settings.store.url)
    if args.action == "add-token":
        if not args.name:
            raise SystemExit("review add-token: --name is required")
        print(store.add_token(args.name, args.role))
        return 0
    from streamguard.quarantine.service import run_review

    r = settings.review
    use_kafka = r.kafka or bool(args.bootstrap_servers)
    return run_review(
        settings, store, r.host, args.port if args.port is not None else r.port, use_kafka
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamguard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, help="TOML or YAML settings file")
        return p

    demo = with_config(sub.add_parser("demo", help="the whole job on simulated traffic, no Kafka"))
    demo.add_argument("--events", type=int, help="stop after N events (default: until Ctrl-C)")
    demo.add_argument("--scenario", default="mixed")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--db", type=Path, default=Path("streamguard-demo.db"))
    demo.add_argument("--http-port", type=int, help="port for /metrics and probes (0 = any free)")
    demo.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="keep serving /metrics and the review page SECONDS after the end",
    )
    demo.add_argument("--review-port", type=int, help="review page port (default 8080, 0 = any)")
    demo.set_defaults(func=cmd_demo)

    run = with_config(sub.add_parser("run", help="the long-running Kafka service"))
    run.add_argument("--bootstrap-servers")
    run.add_argument("--input-topic")
    run.add_argument("--group-id")
    run.add_argument("--http-port", type=int)
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", help="write a simulated stream with ground truth")
    sim.add_argument("--scenario", required=True, help="a scenario name, or 'list'")
    sim.add_argument("--events", type=int, default=100_000)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--base", default="synthetic", choices=["synthetic", "movielens"])
    sim.add_argument("--out", type=Path)
    sim.set_defaults(func=cmd_simulate)

    ev = with_config(sub.add_parser("eval", help="score a recorded stream against its truth"))
    ev.add_argument("events", type=Path)
    ev.add_argument("--truth", type=Path, required=True)
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument("--bootstrap-servers", help="send the stream through this Kafka instead")
    ev.add_argument("--batch-size", type=int, default=500)
    ev.set_defaults(func=cmd_eval)

    rv = with_config(sub.add_parser("review", help="the quarantine review service (API and page)"))
    rv.add_argument("action", nargs="?", choices=["serve", "add-token"], default="serve")
    rv.add_argument("--db", help="store: a SQLite path or a postgresql:// URL (default: store.url)")
    rv.add_argument("--port", type=int, help="HTTP port (default: review.port, 8080)")
    rv.add_argument("--bootstrap-servers", help="materialise quarantine / release via this Kafka")
    rv.add_argument("--name", help="add-token: who the token is for")
    rv.add_argument("--role", choices=["reviewer", "admin"], default="reviewer")
    rv.set_defaults(func=cmd_review)

    mx = with_config(sub.add_parser("matrix", help="eval every scenario over several seeds"))
    mx.add_argument("--scenarios", nargs="*", help="default: all attack scenarios")
    mx.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    mx.add_argument("--bases", nargs="+", default=["synthetic", "movielens"])
    mx.add_argument("--events", type=int, default=50_000)
    mx.add_argument("--out", type=Path, default=Path("out/matrix"))
    mx.set_defaults(func=cmd_matrix)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"streamguard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
