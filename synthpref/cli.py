"""The `synthpref` command: one subcommand per job, `--config file.yaml` plus `key.sub=value` overrides."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from synthpref.config import CAIConfig, DPOConfig, EvalJudgeConfig, SelfRewardConfig, LabelConfig, PPOConfig, RFTConfig, TrainRMConfig, describe_keys, load_config
from synthpref.config.loader import parse_override
from synthpref.errors import EXIT_RESOURCES, EXIT_USER, ResourceError, UserError, cause_of
from synthpref.models import precision
from synthpref.monitor.console import err, quiet_terminal, say

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def _keys_help(cls) -> str:
    return ("Config keys (set them in the YAML file or override with key.sub=value; list items by index,\n"
            "e.g. judging.judges.0.verdict=text):\n" + "\n".join(describe_keys(cls)))


def config_command(sub, name: str, cls: type, config_help: str, **texts) -> argparse.ArgumentParser:
    """A subcommand that takes --config FILE and key.sub=value overrides, its keys listed in --help."""
    cmd = sub.add_parser(name, epilog=_keys_help(cls), formatter_class=argparse.RawDescriptionHelpFormatter, **texts)
    cmd.add_argument("--config", help=config_help)
    cmd.add_argument("--verbose", action="store_true",
                     help="show engine, DeepSpeed, transformers and Ray worker output in the terminal (same as "
                          "verbose=true; quiet runs write it to OUTPUT/logs/ instead)")
    cmd.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, applied in order")
    return cmd


def load(cls: type, args) -> object:
    """The job's config; an `output_dir` URI is staged locally for the rest of the command (runtime/mirror.py)."""
    from synthpref.runtime.mirror import staged_output
    cfg = load_config(cls, args.config, list(args.overrides) + (["verbose=true"] if args.verbose else []))
    args.stages.enter_context(staged_output(cfg))
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthpref", description="Synthetic preference data at cluster scale.")
    sub = parser.add_subparsers(dest="command", required=True)

    config_command(sub, "label", LabelConfig, "YAML config file (keys listed below)",
                   help="sample, pair, judge (both orders, jury) and write preferences",
                   description="Sample k completions per prompt, pair them, judge every pair in both orders with "
                               "a jury, and write a preference dataset. Rerunning the same command resumes: "
                               "finished shards are skipped.")
    config_command(sub, "eval-judge", EvalJudgeConfig, "YAML config file with data: and judging: (keys listed below)",
                   help="a judge's or a jury's agreement with human preference labels",
                   description="Judge human-labelled pairs (hh-rlhf transcripts or chosen/rejected rows) in both "
                               "orders and report agreement with the human choice, position consistency, flip "
                               "rate, length correlation and failures, as a table and as JSON.")

    config_command(sub, "train-rm", TrainRMConfig, "YAML config file with model:, data: and train: (keys listed below)",
                   help="train a Bradley-Terry reward model on preference pairs",
                   description="Train a one-logit reward model on a preferences table (from `synthpref label`) or "
                               "any prompt/chosen/rejected dataset with DeepSpeed ranks on Ray; report held-out "
                               "accuracy and, with human_eval.path, agreement with human labels; save it in "
                               "Hugging Face format for the reward_model judge. A rerun resumes after the last "
                               "finished epoch.")
    config_command(sub, "rft", RFTConfig, "YAML config file with policy:, judging: (pointwise), data: and train:",
                   help="iterative rejection-sampling fine-tuning with live weight sync",
                   description="Each iteration: sample k completions per prompt on the vLLM samplers, score them "
                               "with the jury (pointwise), keep each prompt's best (above keep_threshold), "
                               "fine-tune the policy on the survivors, and load the new weights into the "
                               "samplers. A rerun resumes after the last finished iteration.")

    config_command(sub, "ppo", PPOConfig, "YAML config file with policy:, judging: (the reward), data: and train:",
                   help="RL from AI feedback: PPO or RLOO/GRPO with a KL penalty and an over-optimisation monitor",
                   description="Each step: sample a group of completions per prompt on the vLLM samplers, reward "
                               "them (reward model, judges' expected ratings, functions, or a weighted mix), "
                               "compute reference log-probs and values while the judges work, shape the reward "
                               "with the KL to the starting policy, take ppo_epochs of clipped updates, and load "
                               "the new weights into the samplers. Every monitor.every steps a held-out prompt "
                               "set is scored by the training reward and a gold jury. A rerun resumes after the "
                               "last checkpoint.")

    config_command(sub, "dpo", DPOConfig, "YAML config file with model:, data: (preference pairs) and train:",
                   help="offline DPO or IPO on preference pairs",
                   description="Train a policy with DPO (or IPO, conservative DPO by label_smoothing, pairs "
                               "weighted by their label confidence) on a preferences table from `synthpref label` "
                               "or any prompt/chosen/rejected dataset, with DeepSpeed ranks on Ray (ZeRO 0-3, LoRA "
                               "by train.lora_r). The reference log-probs are computed once before training; each "
                               "epoch reports held-out preference accuracy and reward margins. A rerun resumes "
                               "after the last checkpoint; the policy is saved in Hugging Face format.")

    config_command(sub, "self-reward", SelfRewardConfig, "YAML config file with policy:, data: (prompts) and train:",
                   help="self-rewarding DPO (Yuan et al. 2024) with collapse and self-preference guards",
                   description="Each iteration: measure the policy (win rate over the starting policy by an "
                               "independent jury, its agreement with human labels as a judge, its preference for "
                               "its own text, the diversity panel and the collapse guard); sample candidates; "
                               "judge them with the policy itself on the same engines; pair each prompt's best "
                               "with its worst; DPO; load the new weights into the engines. A rerun resumes after "
                               "the last finished iteration.")

    config_command(sub, "cai", CAIConfig, "YAML config file with policy:, data: (red-team prompts), sl:, label:, "
                   "train_rm: and ppo: (keys listed below)",
                   help="constitutional AI (Bai et al. 2022): critique-revision SFT, then RL from principle-conditioned "
                        "AI feedback",
                   description="SL phase: the policy answers red-team prompts, critiques and revises each answer "
                               "against principles drawn from a constitution for sl.rounds rounds, and is fine-tuned "
                               "on the revisions. RL phase: the SL policy answers each prompt twice, a feedback model "
                               "compares each pair under one drawn principle in both orders (soft labels), a "
                               "preference model is trained on them and the SL policy is trained with PPO against "
                               "it. Each phase runs as its own job in OUTPUT/sl, labels, rm and ppo; a rerun skips "
                               "finished phases and resumes the unfinished one where it stopped.")

    tiny = sub.add_parser("tiny-model", help="build a tiny Llama model + tokenizer with a chat template (no download)")
    tiny.add_argument("out", help="output directory")
    tiny.add_argument("--seed", type=int, default=0, help="weights seed (the same seed gives the same model)")
    tiny.add_argument("--hidden-size", type=int, default=128, help="hidden size (head_dim = hidden/heads >= 32)")
    tiny.add_argument("--layers", type=int, default=2, help="number of decoder layers")
    tiny.add_argument("--heads", type=int, default=2, help="attention heads")
    tiny.add_argument("--reward", action="store_true", help="a one-logit sequence-classification reward model")

    demo = sub.add_parser("demo", help="the label job on the embedded default: tiny models built on the spot, local Ray",
                          description="Builds a tiny policy and a tiny judge, writes a demo prompt set, and runs "
                                      "`synthpref label` on the embedded demo config.")
    demo.add_argument("--output-dir", default="runs/demo", help="where models, prompts and outputs go")
    demo.add_argument("--verbose", action="store_true", help="also show engine and library output")
    demo.add_argument("overrides", nargs="*", metavar="key.sub=value", help="overrides of the demo config")

    report = sub.add_parser("report", help="write RUN/report.html: one self-contained HTML report of a run folder",
                            description="Write RUN/report.html, one file that opens in any browser with no network: "
                                        "the run's key figures, a plot per metric of metrics.jsonl, and by run kind "
                                        "judge bias, agreement, label confidence, quarantine reasons, human spot "
                                        "checks, iterations and principles; a folder of sub-runs (cai) gets a "
                                        "section per sub-run. Every job also writes it when it ends.")
    report.add_argument("run", metavar="RUN", help="a run folder (a job's output_dir, holding metrics.jsonl)")

    from synthpref.monitor import spot_check_cli
    spot_check_cli.add_parser(sub)
    return parser


def cmd_label(args) -> dict:
    from synthpref.algorithms.label import run_label
    return run_label(load(LabelConfig, args))


def cmd_demo(output_dir: str, overrides: list[str], verbose: bool) -> dict:
    """Tiny models and demo prompts built on the spot, then the label job on configs/demo.yaml."""
    from synthpref.algorithms.label import run_label
    from synthpref.data.demo_prompts import write_demo_prompts
    from synthpref.models.tiny import ensure_tiny_model

    out = Path(output_dir)
    verbose = verbose or any(parse_override(o) == (["verbose"], True) for o in overrides)
    with quiet_terminal(out / "labels" / "logs", verbose):
        say(f"building a tiny policy and a tiny judge in {out / 'models'} ...")
        policy = ensure_tiny_model(out / "models" / "policy", seed=1)
        judge = ensure_tiny_model(out / "models" / "judge", seed=2)
        prompts = write_demo_prompts(out / "prompts.jsonl")
        defaults = [f"output_dir={out / 'labels'}", f"data.path={prompts}", f"policy.model={policy}",
                    f"judging.judges.0.model={judge}"] + (["verbose=true"] if verbose else [])
        say(f"labelling {prompts} (configs/demo.yaml); engine and library output: {out / 'labels' / 'logs'}")
        return run_label(load_config(LabelConfig, str(DEMO_CONFIG), defaults + list(overrides)))


def print_summary(summary: dict) -> None:
    """What a label run made: counts, each judge's bias figures, precision, cost, then where it all is."""
    c = summary["counts"]
    say(f"\nprompts {c['prompts']}  quarantined {c['quarantined']}  pairs {c['pairs']}  preferences "
        f"{c['preferences']}  ties {c['ties']}  failed pairs {c['failed_pairs']}  failed verdicts {c['failed_verdicts']}")
    consistency = summary.get("position_consistency")
    if consistency is not None:
        say(f"  position consistency of the jury: {consistency:.3f}")
    for jid, rep in summary["judges"].items():
        flip = rep["position_flip_rate"]
        corr = rep["length_correlation"]
        say(f"  judge {jid}: flip rate {'n/a' if flip is None else f'{flip:.3f}'}, length corr "
            f"{'n/a' if corr is None else f'{corr:+.3f}'}, failed {rep['failed']}/{rep['votes']}")
    if summary.get("dtypes"):
        say(f"  precision: {precision.describe(summary['dtypes'])}")
    cost = summary.get("cost")
    if cost and cost["usd_per_label"] is not None:
        say(f"  judge cost: ${cost['usd_total']:.4f} in all, ${cost['usd_per_label']:.6f} per label "
            f"(a human preference label costs about $0.50-$5)")
    say(f"\nOutputs in {summary['output_dir']}:")
    for name, path in summary["outputs"].items():
        say(f"  {name:<17} {path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with contextlib.ExitStack() as args.stages:
            return run_command(args)
    except UserError as exc:        # bad input or config: one line naming what to fix (errors.py)
        print(f"synthpref: error: {one_line(cause_of(exc))}", file=err(), flush=True)
        return EXIT_USER
    except ResourceError as exc:    # the cluster cannot host a pool or a trainer group
        print(f"synthpref: error: {one_line(cause_of(exc))}", file=err(), flush=True)
        return EXIT_RESOURCES


# jobs that return a report and print its summary lines: (config, "module:runner", "module:summary_lines")
REPORTING_JOBS = {
    "train-rm": (TrainRMConfig, "reward_model:run_train_rm", "reward_model:summary_lines"),
    "rft": (RFTConfig, "rft:run_rft", "rft:summary_lines"),
    "ppo": (PPOConfig, "ppo:run_ppo", "ppo_report:summary_lines"),
    "dpo": (DPOConfig, "dpo:run_dpo", "dpo:summary_lines"),
    "self-reward": (SelfRewardConfig, "self_reward:run_self_reward", "self_reward:summary_lines"),
    "cai": (CAIConfig, "cai:run_cai", "cai:summary_lines"),
}


def _function(name: str):
    """synthpref.algorithms.MODULE's FUNCTION for "MODULE:FUNCTION", imported when a job needs it."""
    import importlib
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(f"synthpref.algorithms.{module}"), function)


def run_command(args) -> int:
    """The command `args` names (main() handles its errors)."""
    if args.command == "label":
        print_summary(cmd_label(args))
    elif args.command == "eval-judge":
        from synthpref.algorithms.eval_judge import format_table, run_eval_judge
        report = run_eval_judge(load(EvalJudgeConfig, args))
        say(format_table(report))
        say(f"figures (JSON): {report['output_dir']}/report.json")
    elif args.command in REPORTING_JOBS:
        cls, runner, lines = REPORTING_JOBS[args.command]
        report = _function(runner)(load(cls, args))
        say("\n".join(_function(lines)(report)))
    elif args.command == "demo":
        print_summary(cmd_demo(args.output_dir, args.overrides, args.verbose))
    elif args.command == "tiny-model":
        from synthpref.models.tiny import build_tiny_model
        path = build_tiny_model(args.out, seed=args.seed, hidden_size=args.hidden_size,
                                num_layers=args.layers, num_heads=args.heads, reward=args.reward)
        print(f"tiny model written to {path}")
    elif args.command == "report":
        from synthpref.monitor.report import write_report
        say(f"report: {write_report(args.run)}")
    elif args.command == "spot-check":
        from synthpref.monitor import spot_check_cli
        say("\n".join(spot_check_cli.run(args)))
    return 0


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
