"""Losses on plain tensors, the location queue, the objectives, CSP's grid-cell encoder and the config loader."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import engine
from engine import GAIRConfig, GAIRError
from engine.pretrain.config import CSPSection, ObjectiveSection, load_config
from engine.pretrain.csp import (
    CSPObjective,
    GridCellConfig,
    GridCellEncoder,
    load_gridcell,
    save_gridcell,
)
from engine.pretrain.losses import (
    csp_inbatch,
    csp_random_locations,
    csp_simcse,
    info_nce,
    location_loss,
    uniform_sphere_lonlat,
)
from engine.pretrain.objective import GAIRObjective, LocationQueue
from engine.pretrain.runtime import amp_settings, lr_factor, param_groups


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_matches_the_definition():
    a, b = unit(6, 8, seed=1), unit(6, 8, seed=2)
    a2b, b2a = info_nce(a, b, 0.07)
    logits = a @ b.T / 0.07
    expected = -torch.log_softmax(logits, dim=1).diagonal().mean()
    assert a2b.item() == pytest.approx(expected.item(), rel=1e-6)
    assert b2a.item() == pytest.approx((-torch.log_softmax(logits.T, dim=1).diagonal().mean()).item(), rel=1e-6)
    perfect, _ = info_nce(a, a, 0.01)
    assert perfect.item() < 1e-3


def test_location_loss_variants():
    x, loc, queue = unit(4, 8, seed=1), unit(4, 8, seed=2), unit(10, 8, seed=3)
    reference = location_loss(x, loc, queue, 0.07, "queue")
    pos = (x * loc).sum(-1, keepdim=True)
    manual = -torch.log_softmax(torch.cat([pos, x @ queue.T], 1) / 0.07, dim=1)[:, 0].mean()
    assert reference.item() == pytest.approx(manual.item(), rel=1e-6)
    assert location_loss(x, loc, None, 0.07, "queue").item() == 0.0  # only the positive: nothing to contrast
    valid = torch.tensor([True] * 6 + [False] * 4)
    masked = location_loss(x, loc, queue, 0.07, "queue", valid)
    assert masked.item() == pytest.approx(location_loss(x, loc, queue[:6], 0.07, "queue").item(), rel=1e-6)
    assert location_loss(x, loc, queue, 0.07, "queue", torch.zeros(10, dtype=torch.bool)).item() == 0.0
    batch = location_loss(x, loc, queue, 0.07, "batch")
    assert batch.item() == pytest.approx(F.cross_entropy(x @ loc.T / 0.07, torch.arange(4)).item(), rel=1e-6)
    both = location_loss(x, loc, queue, 0.07, "batch+queue")
    assert both.item() > batch.item()  # more negatives, larger loss
    with pytest.raises(ValueError):
        location_loss(x, loc, queue, 0.07, "nope")


def test_queue_is_fifo_with_wraparound():
    model = engine.GAIRModel(GAIRConfig.tiny(queue_size=8))
    queue = LocationQueue(model)
    queue.reset()
    queue.push(torch.arange(10.0).reshape(5, 2))
    assert queue.filled == 5 and int(model.queue_ptr_location) == 5
    assert queue.valid().tolist() == [True] * 5 + [False] * 3
    queue.push(torch.arange(100.0, 108.0).reshape(4, 2))
    assert queue.filled == 8 and int(model.queue_ptr_location) == 1
    lonlat = queue.lonlat()
    assert lonlat.shape == (8, 2)
    assert lonlat[0].tolist() == [106.0, 107.0]  # wrapped to the front
    assert lonlat[5].tolist() == [100.0, 101.0]
    queue.push(torch.arange(40.0).reshape(20, 2))  # more than the queue holds: the newest 8 stay
    assert sorted(queue.lonlat()[:, 0].tolist()) == [24.0, 26.0, 28.0, 30.0, 32.0, 34.0, 36.0, 38.0]


def batch(cfg: GAIRConfig, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"rs": torch.rand(n, 10, cfg.rs_input_size, cfg.rs_input_size, generator=g),
            "sv": torch.randn(n, 3, cfg.sv_input_size, cfg.sv_input_size, generator=g),
            "rel_xy": torch.rand(n, 2, generator=g, dtype=torch.float64),
            "lonlat": torch.stack([torch.rand(n, generator=g) + 11, torch.rand(n, generator=g) + 48], 1)}


@pytest.mark.parametrize("mode", ["nili", "bilinear", "mean"])
def test_gair_objective_total_and_gradients(mode):
    torch.manual_seed(0)
    model = engine.GAIRModel(GAIRConfig.tiny())
    objective = GAIRObjective(model, ObjectiveSection(query_mode=mode, distill=True),
                              teacher=engine.GAIRModel(GAIRConfig.tiny()))
    objective.queue.reset()
    objective.after_step(batch(model.config, seed=9)["lonlat"])
    out = objective(**batch(model.config))
    expected = (out["s2r"] + out["r2s"] + out["sv_loc"] + out["rs_loc"]) / 2 + 0.2 * out["distill"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    out["loss"].backward()
    assert model.rs_encoder.s2_encoder.linear_input.weight.grad.abs().sum() > 0
    assert model.optical_proj.weight.grad.abs().sum() > 0
    assert model.location_encoder.LocEnc0.head[0].weight.grad.abs().sum() > 0
    assert (model.imnet.weight.grad is not None) == (mode == "nili")
    assert model.radar_proj.weight.grad is None and model.nerf_fn.norm_out.weight.grad is None


def test_csp_terms_and_objective(tmp_path):
    loc, img = unit(5, 8, seed=1), unit(5, 8, seed=2)
    assert csp_inbatch(loc, img, 1.0, symmetric=True).item() > csp_inbatch(loc, img, 1.0).item()
    rand = unit(3, 5, 8, seed=3)
    logits = torch.cat([(loc * img).sum(-1, keepdim=True), torch.einsum("kbd,bd->bk", rand, img)], 1)
    manual = -torch.log_softmax(logits, 1)[:, 0].mean()
    assert csp_random_locations(loc, rand, img, 1.0).item() == pytest.approx(manual.item(), rel=1e-6)
    assert csp_simcse(loc, loc, 0.05).item() < csp_simcse(loc, unit(5, 8, seed=4), 0.05).item()

    torch.manual_seed(0)
    model = engine.GAIRModel(GAIRConfig.tiny())
    for encoder in ("rff", "gridcell"):
        objective = CSPObjective(model, CSPSection(encoder=encoder, randloc_count=2, dropout=0.2), "nili").train()
        out = objective(**batch(model.config, n=6))
        assert set(out) == {"loss", "inbatch", "randloc", "simcse"}
        out["loss"].backward()
        trainable = {n for n, p in objective.named_parameters() if p.requires_grad}
        if encoder == "rff":
            assert trainable and all(n.startswith("model.location_encoder.") for n in trainable)
            assert not any(n.endswith("capsule.0.b") for n in trainable)
            first = objective.encode_location(batch(model.config)["lonlat"])
            assert not torch.allclose(first, objective.encode_location(batch(model.config)["lonlat"]))  # dropout on
        else:
            assert trainable and all(n.startswith("gridcell.") for n in trainable)
            objective.eval()
            saved = objective.finish(tmp_path)
            again = load_gridcell(saved)
            ll = batch(model.config)["lonlat"]
            assert torch.allclose(again(ll), objective.gridcell(ll))
        if encoder == "rff":  # finish removes the training-only dropout: the same locations encode the same again
            assert objective.finish(tmp_path) is None
            ll = batch(model.config)["lonlat"]
            assert torch.equal(objective.encode_location(ll), objective.encode_location(ll))
    assert all(not h for h in [m._forward_hooks for m in model.location_encoder.modules()])


def test_gridcell_scales_and_sphere_sampling(tmp_path):
    enc = GridCellEncoder(GridCellConfig(embed_dim=16, min_radius_deg=0.01, max_radius_deg=100.0, scales=5))
    wavelengths = 2 * math.pi / enc.frequencies[::3].norm(dim=1)
    assert wavelengths.tolist() == pytest.approx([0.01, 0.1, 1.0, 10.0, 100.0], rel=1e-5)
    assert enc(torch.zeros(3, 2)).shape == (3, 16)
    save_gridcell(enc, tmp_path)
    with pytest.raises(GAIRError, match="not found"):
        load_gridcell(tmp_path / "missing")
    pts = uniform_sphere_lonlat(20000, torch.Generator().manual_seed(0))
    assert pts[:, 0].abs().max() <= 180 and pts[:, 1].abs().max() <= 90
    sin_lat = torch.sin(torch.deg2rad(pts[:, 1]))
    assert abs(sin_lat.mean().item()) < 0.02 and abs(sin_lat.var().item() - 1 / 3) < 0.01  # uniform in sin(lat)


def test_schedule_and_weight_decay_groups():
    assert lr_factor(0, 10, 100, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    decay, no_decay = param_groups(engine.GAIRModel(GAIRConfig.tiny()), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])


def test_configs_load_and_override(tmp_path):
    tiny = load_config("configs/tiny.toml", ["optim.lr=1e-3", "objective.query_mode=bilinear", "model.embed_dim=48"])
    assert tiny.optim.lr == 1e-3 and tiny.objective.query_mode == "bilinear"
    assert tiny.gair_config().embed_dim == 48 and tiny.gair_config().rs_input_size == 48
    base = load_config("configs/base.toml")
    assert base.gair_config() == GAIRConfig()
    optim, objective = base.optim, base.objective
    assert (optim.base_lr, optim.betas, optim.weight_decay, optim.warmup_epochs) == (1.5e-6, (0.9, 0.95), 0.05, 10.0)
    assert (objective.rs_sv_temperature, objective.loc_temperature, base.train.batch_size) == (0.07, 0.07, 256)
    assert base.gair_config().queue_size == 4096
    assert amp_settings(base.train.amp, torch.device("cuda")) == (torch.float16, True)  # the reference's fp16 + scaler
    assert amp_settings(base.train.amp, torch.device("cpu")) == (None, False)
    with pytest.raises(GAIRError, match="fp16 needs CUDA"):
        amp_settings("fp16", torch.device("cpu"))
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: {preset: tiny}\noptim: {betas: [0.8, 0.9]}\n")
    assert load_config(yaml_file).optim.betas == (0.8, 0.9)
    for bad, message in (("objective.query_mode=nope", "not one of"), ("optim.nope=1", "unknown option optim.nope"),
                         ("optim.lr=true", "wrong type"), ("optim", "section.key=value"),
                         ("model.rs_patch_size=7", "bad \\[model\\] overrides")):
        with pytest.raises(GAIRError, match=message):
            load_config("configs/tiny.toml", [bad]).gair_config()


def _gather_worker(rank: int, init_file: str, out_dir: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        a_all, b_all = unit(8, 6, seed=1), unit(8, 6, seed=2)
        a = a_all[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        b = b_all[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        a2b, b2a = info_nce(a, b, 0.1, gather=True)
        (a2b + b2a).backward()
        torch.save({"loss": (a2b + b2a).detach(), "ga": a.grad, "gb": b.grad}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears the group down while the other still communicates (gloo aborts then)
    finally:
        dist.destroy_process_group()


def test_gathered_info_nce_matches_one_big_batch(tmp_path):
    """Two gloo ranks with negatives gathered across them get the gradients of the summed per-rank losses."""
    # spawn, not fork: forking a process whose OpenMP pool is running can deadlock the child
    torch.multiprocessing.start_processes(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                                          start_method="spawn")
    a, b = unit(8, 6, seed=1).requires_grad_(True), unit(8, 6, seed=2).requires_grad_(True)
    target, total = torch.arange(8), 0
    for r in range(2):
        rows = slice(r * 4, (r + 1) * 4)
        total = (total + F.cross_entropy(a[rows] @ b.T / 0.1, target[rows])
                 + F.cross_entropy(b[rows] @ a.T / 0.1, target[rows]))
    total.backward()
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        assert torch.allclose(got["ga"], a.grad[r * 4:(r + 1) * 4], atol=1e-6)
        assert torch.allclose(got["gb"], b.grad[r * 4:(r + 1) * 4], atol=1e-6)
