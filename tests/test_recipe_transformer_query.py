"""The transformer query mode runs `nerf_fn`, untrained in the official weights: a warning, and not a plugin choice."""
from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import pytest
import torch

import engine
from engine.cli.options import add_argument
from engine.model.checkpoint import load_bundle, load_official, save_bundle
from engine.params import OPERATIONS

TINY = engine.GAIRConfig.tiny()


def _query(model, mode: str) -> np.ndarray:
    x = np.random.default_rng(0).random((1, 10, TINY.rs_input_size, TINY.rs_input_size)).astype(np.float32)
    return model.query_localized(x, [[0.5, 0.5]], [[0.0, 1.0, 1.0, 0.0]], mode=mode)


@pytest.fixture()
def official_like(tmp_path):
    torch.manual_seed(0)
    torch.save({"model": engine.GAIRModel(TINY).state_dict()}, tmp_path / "ck.pth")
    return load_official(tmp_path / "ck.pth", config=TINY)


def test_transformer_mode_warns_once_on_untrained_weights(official_like, caplog):
    with pytest.warns(UserWarning, match="nerf_fn, which these weights never trained"):
        _query(official_like, "transformer")
    assert "never trained" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _query(official_like, "transformer")  # once per model
        _query(official_like, "nili")


def test_other_modes_do_not_warn(official_like):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in ("nili", "bilinear", "bicubic"):
            _query(official_like, mode)


def test_bundles_record_whether_nerf_fn_was_trained(tmp_path, official_like):
    save_bundle(official_like, tmp_path / "untrained")
    assert json.loads((tmp_path / "untrained" / "config.json").read_text())["nerf_fn_trained"] is False
    with pytest.warns(UserWarning, match="never trained"):
        _query(load_bundle(tmp_path / "untrained"), "transformer")
    official_like.nerf_fn_trained = True
    save_bundle(official_like, tmp_path / "trained")
    trained = load_bundle(tmp_path / "trained")
    assert trained.nerf_fn_trained is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _query(trained, "transformer")


def test_transformer_is_not_a_toolbox_choice_but_the_cli_accepts_it():
    for op in OPERATIONS.values():
        for param in op.params:
            if param.kind == "choice" and param.toolbox:
                assert "transformer" not in param.choices, f"{op.id}.{param.name} offers transformer in the plugin"
    mode = OPERATIONS["embed_features"].param("mode")
    assert "transformer" in mode.expert_choices and mode.check("transformer") is None
    assert mode.check("nearest") is not None
    parser = argparse.ArgumentParser()
    add_argument(parser, mode)
    assert parser.parse_args(["--mode", "transformer"]).mode == "transformer"
