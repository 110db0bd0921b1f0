"""The `csp-released` preset builds CSP's released-script encoder, losses, sampler and optimizer; ours stays."""
from __future__ import annotations

import math

import pytest
import torch

import engine
from engine import GAIRError
from engine.pretrain.config import load_config
from engine.pretrain.csp import CSPObjective, load_gridcell
from engine.pretrain.losses import sphericalold_lonlat
from engine.pretrain.runtime import make_optimizer, param_groups, schedule


def test_csp_released_preset_values():
    cfg = load_config(None, ["csp.preset=\"csp-released\""])
    c, o = cfg.csp, cfg.optim
    assert cfg.objective.name == "csp" and c.encoder == "gridcell" and c.gridcell_form == "released"
    assert (c.gridcell_min_radius_deg, c.gridcell_max_radius_deg, c.gridcell_scales) == (0.1, 360.0, 32)
    assert (c.gridcell_hidden, c.gridcell_layers, c.gridcell_activation, c.dropout) == (512, 1, "gelu", 0.5)
    assert (c.output_dim, c.train_image_projection, c.negatives) == (256, True, "sphericalold")
    assert (c.inbatch_temperature, c.randloc_temperature, c.simcse_temperature) == (20.0, 1.0, 1.0)
    assert (o.name, o.lr, o.betas, o.schedule, o.gamma_per_epoch, o.warmup_epochs) == (
        "adam", 5e-5, (0.9, 0.999), "exponential", 0.98, 0.0)
    assert cfg.train.batch_size == 1024
    # a file's own value wins over the preset's
    assert load_config(None, ["csp.preset=\"csp-released\"", "optim.lr=5e-4"]).optim.lr == 5e-4
    ours = load_config(None, ["csp.preset=\"ours\""])
    assert (ours.csp.encoder, ours.csp.negatives, ours.optim.name, ours.optim.schedule) == (
        "rff", "sphere", "adamw", "cosine")
    with pytest.raises(GAIRError, match="csp.preset"):
        load_config(None, ["csp.preset=\"csp-2023\""])
    with pytest.raises(GAIRError, match="output_dim .* needs csp.encoder"):
        load_config(None, ["csp.output_dim=256"])


def test_csp_released_builds_those_shapes(tmp_path):
    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig.tiny())
    cfg = load_config(None, ["csp.preset=\"csp-released\"", "model.preset=\"tiny\""])
    objective = CSPObjective(model, cfg.csp, "nili").train()
    grid = objective.gridcell
    # 2 axes x 32 scales, frequency 1 / lambda (no 2 pi), lambda geometric from 0.1 to 360 degrees
    assert grid.frequencies.shape == (64, 2)
    lon_freq = grid.frequencies[0::2, 0]
    assert (grid.frequencies[0::2, 1] == 0).all() and (grid.frequencies[1::2, 0] == 0).all()
    assert (1 / lon_freq).tolist() == pytest.approx([0.1 * 3600 ** (i / 31) for i in range(32)], rel=1e-5)
    layers = [type(m).__name__ for m in grid.mlp]
    assert layers == ["Linear", "GELU", "Dropout", "LayerNorm", "Linear"]
    assert (grid.mlp[0].in_features, grid.mlp[0].out_features, grid.mlp[4].out_features) == (128, 512, 256)
    assert grid.mlp[2].p == 0.5 and grid.mlp[0].bias.abs().max() == 0
    bound = math.sqrt(6 / (128 + 512))  # xavier uniform
    assert grid.mlp[0].weight.abs().max() <= bound and grid.mlp[0].weight.abs().max() > 0.9 * bound
    # the trained image projection maps the 32-d features to the 256-d location space
    assert (objective.image_head.in_features, objective.image_head.out_features) == (32, 256)
    g = torch.Generator().manual_seed(0)
    batch = {"rs": torch.rand(8, 10, 48, 48, generator=g), "sv": torch.randn(8, 3, 32, 32, generator=g),
             "rel_xy": torch.rand(8, 2, generator=g, dtype=torch.float64),
             "lonlat": torch.stack([torch.rand(8, generator=g) * 10, torch.rand(8, generator=g) * 10 + 40], 1)}
    out = objective(**batch)
    out["loss"].backward()
    trainable = {n.split(".")[0] for n, p in objective.named_parameters() if p.requires_grad}
    assert trainable == {"gridcell", "image_head"}
    assert objective.image_head.weight.grad is not None and objective.gridcell.mlp[0].weight.grad is not None
    objective.eval()
    again = load_gridcell(objective.finish(tmp_path))
    assert again.config.form == "released" and torch.allclose(again(batch["lonlat"]), grid(batch["lonlat"]))


def test_sphericalold_sampler():
    pts = sphericalold_lonlat(50000, torch.Generator().manual_seed(0))
    x, y = pts[:, 0].double() / 180, pts[:, 1].double() / 90
    assert (x**2 + y**2).max() <= 1 + 1e-6  # inside the disc: never lon 180 and lat 90 together
    # radius^2 = 1 - u^2 with u uniform in [-1, 1]: mean 2/3 (a uniform disc would give 1/2)
    assert (x**2 + y**2).mean().item() == pytest.approx(2 / 3, abs=0.01)
    assert abs(x.mean().item()) < 0.01 and abs(y.mean().item()) < 0.01


def test_adam_and_exponential_schedule():
    cfg = load_config(None, ["csp.preset=\"csp-released\""])
    layer = torch.nn.Linear(3, 2)
    optimizer = make_optimizer(cfg.optim, param_groups(layer, 0.0), cfg.optim.lr)
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["betas"] == (0.9, 0.999)
    factor = schedule(cfg.optim, steps_per_epoch=10, total=1000, lr=cfg.optim.lr)
    assert [factor(s) for s in (0, 9, 10, 25, 99)] == pytest.approx([1, 1, 0.98, 0.98**2, 0.98**9])
    gair = load_config(None, ["optim.warmup_epochs=1"])
    assert type(make_optimizer(gair.optim, param_groups(layer, 0.05), 1e-3)) is torch.optim.AdamW
    cosine = schedule(gair.optim, steps_per_epoch=10, total=100, lr=1e-3)
    assert cosine(4) == pytest.approx(0.5) and cosine(99) == pytest.approx(0.0, abs=1e-3)
