"""The shared training loop's early stopping (``train.patience``) and the record of how a run
ended, on a one-layer model."""

from __future__ import annotations

import pytest
import torch

from finetune.trainer import TrainArgs, train_loop

N_EXAMPLES, BATCH = 6, 2  # three optimizer steps per epoch


class ScriptedValidation:
    """A validation set whose loss follows ``losses``, one value per new state of the weights:
    weights it has scored before get the same loss again (as a real validation set would),
    so a restored epoch, or the same epoch of a resumed run, reads as that epoch."""

    def __init__(self, losses: list[float]) -> None:
        self.model: torch.nn.Module | None = None  # the model of the run it scores
        self.losses = list(losses)
        self.seen: list[tuple[torch.Tensor, float]] = []

    def __call__(self) -> dict[str, float]:
        weights = self.model.weight.detach().clone()
        for earlier, loss in self.seen:
            if torch.equal(earlier, weights):
                return {"eval_loss": loss}
        self.seen.append((weights, self.losses[len(self.seen)]))
        return {"eval_loss": self.seen[-1][1]}


def _run(tmp_path, losses, resume=True, stop_after_steps=None, **train):
    """One run of the loop; ``losses``: a list, or a ScriptedValidation shared with a run
    before."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    inputs = torch.randn(N_EXAMPLES, 2)

    def step(groups):
        loss = model(inputs[groups[0]]).pow(2).mean()
        loss.backward()
        return loss.item(), len(groups[0])

    validation = losses if isinstance(losses, ScriptedValidation) else ScriptedValidation(losses)
    validation.model = model
    args = TrainArgs(batch_size=BATCH, lr=0.05, save_every=100, log_every=1, **train)
    loop = train_loop(
        args,
        model,
        N_EXAMPLES,
        step,
        validation,
        tmp_path,
        resume=resume,
        stop_after_steps=stop_after_steps,
    )
    return loop, model, validation


def test_patience_stops_when_validation_loss_stalls_and_keeps_the_best_epoch(tmp_path):
    loop, model, validation = _run(tmp_path, [1.0, 0.5, 0.6, 0.55, 0.7, 0.1], epochs=20, patience=2)
    # best after epoch 2; epochs 3 and 4 do not improve on it: two in a row, so it stops there
    assert loop.steps == 4 * 3 and len(validation.seen) == 4
    epoch_two = validation.seen[1][0]
    assert torch.equal(model.weight.detach(), epoch_two)  # the model holds epoch 2's weights
    m = loop.metrics
    assert (m["eval_loss"], m["best_epoch"], m["epochs_run"]) == (0.5, 2, 4)
    assert m["stop_reason"] == "patience"
    assert m["stop_summary"] == (
        "stopped after 4 of 20 epochs: validation loss did not improve for 2 epochs; kept the "
        "weights of epoch 2 (lowest validation loss, 0.500)"
    )


def test_a_resumed_run_stops_where_the_straight_one_did(tmp_path):
    losses = ScriptedValidation([1.0, 0.5, 0.6, 0.55, 0.7, 0.1])
    straight, straight_model, _ = _run(tmp_path / "straight", losses, epochs=20, patience=2)
    # interrupted inside epoch 4, after the best epoch and one epoch without improvement
    first, _, _ = _run(tmp_path / "resumed", losses, epochs=20, patience=2, stop_after_steps=10)
    assert first.stopped_early
    resumed, resumed_model, _ = _run(tmp_path / "resumed", losses, epochs=20, patience=2)
    assert resumed.steps == straight.steps == 12
    assert torch.equal(resumed_model.weight, straight_model.weight)
    assert resumed.metrics == {**straight.metrics, "tokens_per_s": resumed.metrics["tokens_per_s"]}
    assert len(losses.seen) == 4  # the resumed run met no weights the straight run had not
    # and a finished run asked to resume returns the same model without training again
    again, again_model, _ = _run(tmp_path / "resumed", losses, epochs=20, patience=2)
    assert again.steps == 12 and torch.equal(again_model.weight, straight_model.weight)
    assert again.metrics["stop_summary"] == straight.metrics["stop_summary"]


@pytest.mark.parametrize(
    ("train", "reason", "summary", "epochs_run"),
    [
        ({"epochs": 3}, "epochs", "ran all 3 epochs", 3),
        ({"epochs": 1}, "epochs", "ran its one epoch", 1),
        ({"epochs": 3, "max_steps": 4}, "max_steps", "reached train.max_steps=4 after 1.33 epochs",
         1.33),
        # improving every epoch, patience never runs out: the last epoch is the best
        ({"epochs": 3, "patience": 1}, "epochs", "ran all 3 epochs", 3),
    ],
)  # fmt: skip
def test_the_metrics_say_how_many_epochs_ran_and_why_it_stopped(
    tmp_path, train, reason, summary, epochs_run
):
    loop, _, _ = _run(tmp_path, [1.0, 0.9, 0.8, 0.7], **train)
    assert loop.metrics["stop_reason"] == reason
    assert loop.metrics["stop_summary"] == summary
    assert loop.metrics["epochs_run"] == epochs_run
    assert ("best_epoch" in loop.metrics) == ("patience" in train)
    assert (tmp_path / "checkpoints" / "best").is_dir() == ("patience" in train)


def test_patience_without_a_validation_loss_runs_every_epoch(tmp_path):
    loop, _, _ = _run(tmp_path, [float("nan")] * 5, epochs=4, patience=1)
    assert loop.steps == 12 and loop.metrics["stop_summary"] == "ran all 4 epochs"


def test_patience_must_not_be_negative():
    with pytest.raises(ValueError, match=r"train.patience=-1 must be >= 0"):
        TrainArgs(patience=-1)
