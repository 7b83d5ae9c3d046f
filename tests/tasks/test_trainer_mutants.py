"""The trainer's parts: devices, the minibatch schedule, optimizers, freezing a diverged
model, per-model clipping, the memory estimate and the population cap (found by mutation
testing, ``experiments/mutation.py trainer``)."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lossforge.tasks import TaskError, get
from lossforge.tasks import trainer
from lossforge.tasks.trainer import (Outcome, _clip_per_model, _freeze, _make_optimizer, _Population, batch_schedule,
                                     bytes_per_candidate, default_max_population, epoch_batches, memory_budget,
                                     resolve_device)


# ----------------------------------------------------------------------------- devices
def test_devices_are_resolved_or_refused_with_the_fix():
    assert resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("meta")).type == "meta"
    with pytest.raises(TaskError, match=r"^device 'gpu0' is not a device; use 'cpu', 'cuda', 'cuda:N' or a "
                                        r"torch\.device$"):
        resolve_device("gpu0")
    with pytest.raises(TaskError, match=r"^device 3\.5 is not a device"):
        resolve_device(3.5)
    if not torch.cuda.is_available():
        with pytest.raises(TaskError, match=r"^device 'cuda:1': CUDA is not available on this machine; use 'cpu' "
                                            r"or leave device unset$"):
            resolve_device("cuda:1")


# ----------------------------------------------------------------------------- batches
def test_the_schedule_is_shuffled_epochs_without_replacement_dropping_the_partial_batch():
    n, batch = 10, 3  # 3 batches an epoch (9 of the 10 rows), the 10th row dropped each epoch
    s = batch_schedule(n, batch, 7, seed=5)
    assert s.shape == (7, 3) and s.dtype.kind == "i"
    for epoch in (s[0:3], s[3:6]):
        rows = epoch.ravel()
        assert len(set(rows.tolist())) == 9 and rows.min() >= 0 and rows.max() < n
    assert not np.array_equal(s[0:3], s[3:6])  # each epoch is shuffled anew
    assert np.array_equal(batch_schedule(n, batch, 7, seed=5), s)
    assert not np.array_equal(batch_schedule(n, batch, 7, seed=6), s)
    assert np.array_equal(batch_schedule(n, batch, 4, seed=5), s[:4])  # a longer budget extends, never reshuffles
    # any integer seed, including negative and huge ones
    assert batch_schedule(n, batch, 2, seed=-1).shape == batch_schedule(n, batch, 2, seed=2**70).shape == (2, 3)


def test_epoch_batches_yield_one_epoch_at_a_time():
    chunks = list(epoch_batches(100, 10, 25, seed=0))
    assert [c.shape for c in chunks] == [(10, 10), (10, 10), (5, 10)]
    assert np.array_equal(np.concatenate(chunks), batch_schedule(100, 10, 25, seed=0))
    assert list(epoch_batches(100, 10, 0, seed=0)) == []


# ----------------------------------------------------------------------------- population state
def test_a_stopped_candidate_keeps_its_first_outcome():
    pop = _Population(3, "cpu")
    pop.stop(1, Outcome("diverged", error="first"))
    pop.stop(1, Outcome("error", error="second"))
    assert pop.alive.tolist() == [True, False, True]
    assert pop.outcomes[1].error == "first" and pop.outcomes[0] is None and pop.outcomes[2] is None


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_the_tasks_optimizer_and_its_settings_are_used(name, cls):
    task = SimpleNamespace(optimizer=name, lr=0.03, weight_decay=0.001, momentum=0.8)
    opt = _make_optimizer(task, [torch.zeros(2, 3, requires_grad=True)])
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.03 and group["weight_decay"] == 0.001
    if name == "sgd":
        assert group["momentum"] == 0.8


def test_freezing_zeroes_the_models_parameters_gradients_and_optimizer_state_only():
    frozen = []
    model = SimpleNamespace(freeze=lambda rows: frozen.append(rows.tolist()))
    w = torch.nn.Parameter(torch.randn(4, 3, 2))
    b = torch.nn.Parameter(torch.randn(4, 2))
    opt = torch.optim.Adam([w, b], lr=0.1)
    (w.sum() + b.pow(2).sum()).backward()
    opt.step()
    (w.sum() + b.pow(2).sum()).backward()
    before = {id(t): t.detach().clone() for t in (w, b, w.grad, b.grad, *opt.state[w].values(), *opt.state[b].values())}
    steps = {id(p): opt.state[p]["step"].clone() for p in (w, b)}
    _freeze(torch.tensor([1, 3]), [w, b], opt, model)
    assert frozen == [[1, 3]]
    for t in (w, b, w.grad, b.grad, opt.state[w]["exp_avg"], opt.state[w]["exp_avg_sq"], opt.state[b]["exp_avg"],
              opt.state[b]["exp_avg_sq"]):
        assert torch.all(t[[1, 3]] == 0)
        assert torch.equal(t[[0, 2]], before[id(t)][[0, 2]])
    for p in (w, b):
        assert torch.equal(opt.state[p]["step"], steps[id(p)])  # the step counter is not a row of a model


def test_clipping_scales_each_models_gradient_to_the_norm_on_its_own():
    w = torch.zeros(3, 4, requires_grad=True)
    b = torch.zeros(3, 1, requires_grad=True)
    w.grad = torch.tensor([[3.0, 0, 0, 0], [0.3, 0, 0, 0], [30.0, 0, 0, 0]])
    b.grad = torch.tensor([[4.0], [0.4], [40.0]])  # norms 5, 0.5 and 50
    _clip_per_model([w, b], 3, max_norm=1.0)
    norms = torch.sqrt(w.grad.pow(2).sum(1) + b.grad.pow(2).sum(1))
    torch.testing.assert_close(norms, torch.tensor([1.0, 0.5, 1.0]), rtol=1e-5, atol=0)
    torch.testing.assert_close(w.grad[:, 0] / b.grad[:, 0], torch.tensor([0.75, 0.75, 0.75]))  # direction kept


# ----------------------------------------------------------------------------- order of outcomes
def test_outcomes_come_back_in_the_order_given_whatever_the_layout():
    task = get("wine")
    losses = ["abs(p-y)", "-y*log(p)", "(p-y)**2"]
    mixed = task.evaluate(losses, seed=2, steps=4)
    for loss, got in zip(losses, mixed):
        (alone,) = task.evaluate([loss], seed=2, steps=4)
        assert got.metric == pytest.approx(alone.metric, abs=1e-9), loss


# ----------------------------------------------------------------------------- memory
def _task(**kw):
    base = dict(model_stats=(0, 0), pixels=1, effective_batch_size=0, num_classes=3, kind="multiclass",
                n_eval_max=10_000)
    return SimpleNamespace(**{**base, **kw})


def test_the_memory_estimate_counts_weights_activations_loss_rows_and_evaluation():
    assert bytes_per_candidate(_task()) == 0
    # parameter, gradient and two optimizer moments, float32
    assert bytes_per_candidate(_task(model_stats=(1000, 0))) == 16_000
    # activations: forward, saved, backward, per sample of the batch; the evaluation chunk of 2048 samples
    assert bytes_per_candidate(_task(model_stats=(0, 100), effective_batch_size=10, num_classes=0)) == (
        4 * 10 * 100 * 3 + 4 * 2048 * 100)
    # the loss tables: (2 rows + 8) per program row, per column, per element of the batch
    assert bytes_per_candidate(_task(effective_batch_size=10), rows_per_candidate=1) == 4 * 10 * 3 * 10
    assert bytes_per_candidate(_task(effective_batch_size=10, kind="binary")) == 4 * 32 * 2 * 10
    assert bytes_per_candidate(_task(effective_batch_size=10, kind="regression")) == 4 * 32 * 1 * 10
    # images: every pixel is a loss element, and evaluation takes fewer images (at most n_eval_max)
    img = _task(model_stats=(0, 10), effective_batch_size=2, pixels=64, num_classes=0)
    assert bytes_per_candidate(img) == 4 * 2 * 10 * 3 + 4 * (2048 // 64 * 4) * 10
    assert bytes_per_candidate(_task(model_stats=(0, 10), pixels=64, n_eval_max=5, num_classes=0)) == 4 * 5 * 10
    assert bytes_per_candidate(_task(model_stats=(0, 10), pixels=4096, num_classes=0)) == 4 * 1 * 10


def _meminfo(monkeypatch, text):
    def fake_open(path, *a, **kw):
        assert path == "/proc/meminfo"
        if text is None:
            raise OSError("no /proc here")
        return io.StringIO(text)

    monkeypatch.setattr(trainer, "open", fake_open, raising=False)


def test_the_cpu_memory_budget_is_a_quarter_of_the_available_memory_at_most_4_gib(monkeypatch):
    _meminfo(monkeypatch, "MemTotal:  64000000 kB\nMemAvailable:    1000 kB\nSwapTotal: 0 kB\n")
    assert memory_budget(torch.device("cpu")) == 1000 * 1024 // 4
    _meminfo(monkeypatch, "MemTotal: 64000000 kB\nMemAvailable: 40000000 kB\n")
    assert memory_budget(torch.device("cpu")) == 4 << 30
    _meminfo(monkeypatch, "MemTotal: 64000000 kB\n")  # no MemAvailable: 8 GiB assumed
    assert memory_budget(torch.device("cpu")) == 2 << 30
    _meminfo(monkeypatch, None)
    assert memory_budget(torch.device("cpu")) == 2 << 30


def test_the_population_cap_fits_the_budget_within_1_and_the_device_cap(monkeypatch):
    monkeypatch.setattr(trainer, "bytes_per_candidate", lambda task: 1000)
    for budget, cpu, gpu in ((10_500, 10, 10), (999, 1, 1), (10**9, 256, 4096), (256_000, 256, 256)):
        monkeypatch.setattr(trainer, "memory_budget", lambda device, b=budget: b)
        assert default_max_population(None, torch.device("cpu")) == cpu
        assert default_max_population(None, torch.device("cuda")) == gpu


# ----------------------------------------------------------------------------- found by mutating the loop too
def test_clipping_leaves_a_gradient_below_the_norm_as_it_is_even_a_tiny_one():
    w = torch.zeros(2, 2, requires_grad=True)
    w.grad = torch.tensor([[3e-7, 4e-7], [0.0, 0.0]])  # norms 5e-7 (below the 1e-6 guard) and 0
    _clip_per_model([w], 2, max_norm=1.0)
    assert torch.equal(w.grad, torch.tensor([[3e-7, 4e-7], [0.0, 0.0]]))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_fused_kernel_is_used_where_the_device_has_one_else_the_plain_optimizer(name, monkeypatch):
    task = SimpleNamespace(optimizer=name, lr=0.03, weight_decay=0.001, momentum=0.8)
    w = torch.zeros(2, 3, requires_grad=True)
    opt = _make_optimizer(task, [w])
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["params"] == [w]  # CPU float32 has one
    attr = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}[name]
    real = getattr(torch.optim, attr)

    class NoFusedKernel(real):
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("no fused kernel here")
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, attr, NoFusedKernel)
    opt = _make_optimizer(task, [w])
    group = opt.param_groups[0]
    assert type(opt) is NoFusedKernel and not group["fused"] and group["params"] == [w]
    assert group["lr"] == 0.03 and group["weight_decay"] == 0.001 and group.get("momentum", 0.8) == 0.8


def test_with_cuda_the_default_device_is_cuda_and_the_budget_60_percent_of_its_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")
    asked = []

    def mem_get_info(device):
        asked.append(device)
        return 10_000, 50_000  # free, total

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert memory_budget(torch.device("cuda:1")) == 6_000 and asked == [torch.device("cuda:1")]


def test_the_memory_estimate_counts_the_loss_rows_of_every_pixel_and_a_two_pixel_image_as_an_image():
    # loss tables: (2 * 12 + 8) rows per column (2 for binary), per element of the batch, per pixel
    assert bytes_per_candidate(_task(kind="binary", effective_batch_size=3, pixels=5)) == 4 * 32 * 2 * 3 * 5
    # evaluation of 2-pixel images: 2048 // 2 * 4 images in a chunk
    assert bytes_per_candidate(_task(model_stats=(0, 10), pixels=2, num_classes=0)) == 4 * 4096 * 10


def test_three_hundred_seeds_give_three_hundred_different_schedules():
    """Seeds are independent runs: no two of them share a minibatch order (a seed folded onto a
    small range would repeat schedules)."""
    schedules = {batch_schedule(20, 5, 4, seed=s).tobytes() for s in range(300)}
    assert len(schedules) == 300
