"""Conformance of the PerSAM engine with the reference implementation, stage by stage.

Runs every case of the in-repo fixtures (``tests/data/persam_ref``) and of every fixture root listed in
``$VOS_PERSAM_FIXTURES``. Tolerances: ``tests/data/persam_ref/README.md`` §8.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conformance import (CURVE_RTOL, LOGIT_ATOL, SCORE_ATOL, SIM_ATOL, WEIGHT_ATOL, Stages, fixture_cases,
                         load_fixture_sam, read_mask, read_png)
from vos.models.sam_backend import sam_backend
from vos.persam import PerSAM, PerSAMF, encode_image
from vos.persam.video import VideoConfig, fit_object_weights, object_target, video_step
from vos.persam import prior

CASES = list(fixture_cases())


def _meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def _encoder_summary(st: Stages, name: str, features: torch.Tensor, summary: dict):
    f = features.double()
    st.close(f"{name} embedding shape", list(f.shape), summary["shape"])
    st.close(f"{name} embedding samples", [float(f[0, s["c"], s["y"], s["x"]]) for s in summary["samples"]],
             [s["value"] for s in summary["samples"]], atol=1e-4)
    st.close(f"{name} embedding mean/std", [float(f.mean()), float(f.std())], [summary["mean"], summary["std"]],
             atol=1e-5)


def check_persam(sam, case_dir: Path, st: Stages):
    inp, out = case_dir / "inputs", case_dir / "persam"
    meta = _meta(out)
    ref, test = read_png(inp / "ref_image.png"), read_png(inp / "test_image.png")
    engine = PerSAM(sam).set_reference(ref, read_png(inp / "ref_mask.png"))
    r = engine.segment(test, trace=True)
    t = r.trace
    _encoder_summary(st, "test", encode_image(sam, test).features, meta["test_features_summary"])
    st.exact("ref_grid_mask", engine.reference.grid, read_mask(out / "ref_grid_mask.png"))
    st.close("target_embedding", engine.reference.embedding.flatten(), np.load(out / "target_embedding.npy"),
             atol=SIM_ATOL)
    st.close("sim_grid", t["sim_grid"], np.load(out / "sim_grid.npy"), atol=SIM_ATOL)
    st.close("sim_full", t["sim_full"], np.load(out / "sim_full.npy"), atol=SIM_ATOL)
    st.exact("positive/negative points", [t["positive_point_xy"], t["negative_point_xy"]],
             [meta["positive_point_xy"], meta["negative_point_xy"]])
    st.exact("prompt points", r.points, meta["prompt_points_xy"])
    st.exact("prompt labels", r.labels, meta["prompt_labels"])
    st.close("attn_bias", t["attn_bias"], np.load(out / "attn_bias.npy"), atol=SIM_ATOL)
    st.close("stage1 low-res logits", t["stage1"].low_res[0, 0], np.load(out / "stage1_lowres_logits.npy"),
             atol=LOGIT_ATOL)
    st.close("stage1 score", t["stage1"].scores[0, 0], meta["stage1"]["score"], atol=SCORE_ATOL)
    st.mask("stage1 mask", t["stage1_mask"], read_mask(out / "stage1_mask.png"))
    for stage, key in (("stage2", "stage2"), ("stage3", "stage3")):
        if stage == "stage3":
            st.exact("stage3 box", t["stage3_box"], meta["stage3"]["box_xyxy"])
        st.close(f"{stage} scores", t[key].scores[0], meta[stage]["scores"], atol=SCORE_ATOL)
        for k in range(3):
            st.mask(f"{stage} mask {k}", t[f"{key}_masks"][k], read_mask(out / f"{stage}_mask{k}.png"))
        st.exact(f"{stage} best index", t[f"{key}_best"], meta[stage]["best_index"])
    st.close("stage3 best low-res logits", t["stage3"].low_res[0, t["stage3_best"]],
             np.load(out / "stage3_lowres_logits_best.npy"), atol=LOGIT_ATOL)
    st.mask("final mask", r.mask, read_mask(out / "final_mask.png"))
    st.area("final mask area", r.mask.sum(), meta["final_mask_area"], r.mask.size)


def check_persam_f(sam, case_dir: Path, st: Stages):
    inp, out = case_dir / "inputs", case_dir / "persam_f"
    meta = _meta(out)
    train = meta["train"]
    engine = PerSAMF(sam, iterations=train["iterations"], lr=train["lr"])
    engine.set_reference(read_png(inp / "ref_image.png"), read_png(inp / "ref_mask.png"))
    tt = engine.train_trace
    st.close("target_feat", engine.reference.target_max_mean.flatten(), np.load(out / "target_feat.npy"),
             atol=SIM_ATOL)
    st.close("ref_sim_grid", tt["ref_sim_grid"], np.load(out / "ref_sim_grid.npy"), atol=SIM_ATOL)
    st.exact("train point", tt["train_point_xy"], train["point_xy"])
    st.close("train decoder scores", tt["train_scores"], train["decoder_scores"], atol=SCORE_ATOL)
    for k in range(3):
        st.mask(f"train mask {k}", tt["train_masks"][k], read_mask(out / f"train_mask{k}.png"))
    st.exact("target pixels", int(engine._train[1].sum()), train["target_pixels"])
    fit = engine.fit(curve_points=[row["iteration"] for row in train["loss_curve"]])
    for ours, exp in st.paired("loss curve points", fit.curve, train["loss_curve"]):
        st.close(f"loss curve weights @{exp['iteration']}", ours["weights_before_step"], exp["weights_before_step"],
                 atol=WEIGHT_ATOL)
        st.close(f"loss curve dice/focal @{exp['iteration']}", [ours["dice"], ours["focal"]],
                 [exp["dice"], exp["focal"]], rtol=CURVE_RTOL)
    st.close("learned weights", fit.weights, train["learned_weights"], atol=WEIGHT_ATOL)
    st.close("learned raw params", fit.raw, train["learned_raw_params"], atol=WEIGHT_ATOL)

    test = meta["test"]
    r = engine.segment(read_png(inp / "test_image.png"), trace=True)
    t = r.trace
    st.close("sim_grid", t["sim_grid"], np.load(out / "sim_grid.npy"), atol=SIM_ATOL)
    st.exact("test point", t["point_xy"], test["point_xy"])
    st.close("step1 scores", t["step1"].scores[0], test["step1_scores"], atol=SCORE_ATOL)
    for k in range(3):
        st.mask(f"step1 mask {k}", t["step1_masks"][k], read_mask(out / f"step1_mask{k}.png"))
    st.mask("weighted mask", t["weighted_mask"], read_mask(out / "weighted_mask.png"))
    st.close("weighted low-res logits", t["weighted_lowres_logits"], np.load(out / "weighted_lowres_logits.npy"),
             atol=LOGIT_ATOL)
    for stage in ("stage2", "stage3"):
        st.exact(f"{stage} box", t[f"{stage}_box"], test[stage]["box_xyxy"])
        st.close(f"{stage} scores", t[stage].scores[0], test[stage]["scores"], atol=SCORE_ATOL)
        for k in range(3):
            st.mask(f"{stage} mask {k}", t[f"{stage}_masks"][k], read_mask(out / f"{stage}_mask{k}.png"))
        st.exact(f"{stage} best index", t[f"{stage}_best"], test[stage]["best_index"])
    st.mask("final mask", r.mask, read_mask(out / "final_mask.png"))
    st.area("final mask area", r.mask.sum(), test["final_mask_area"], r.mask.size)


def _video_inputs(case_dir: Path):
    frames = sorted((case_dir / "inputs" / "frames").glob("*.png"))
    return [read_png(p) for p in frames], read_png(case_dir / "inputs" / "gt_labels" / "00000.png")


def _boxes(label_map: np.ndarray, ids) -> np.ndarray:
    return np.stack([prior.mask_box(label_map == oid) for oid in ids])


def _label_map(logits: torch.Tensor, ids) -> np.ndarray:
    stack = np.concatenate([np.zeros((1,) + tuple(logits.shape[1:]), np.float32), logits.cpu().numpy()])
    return np.asarray([0] + list(ids), np.uint8)[stack.argmax(0)]


def check_video(sam, case_dir: Path, method: str, st: Stages):
    """Paper video mode on the fixture frames: targets, (training), every frame and object, label maps."""
    sam = sam_backend(sam)
    out = case_dir / method
    meta = _meta(out)
    frames, gt0 = _video_inputs(case_dir)
    ids = [obj["label_value"] for obj in meta["objects"]]
    f_mode = method == "persam_video_f"
    config = VideoConfig(method="persam_f" if f_mode else "persam", topk=meta["params"]["topk"],
                         box_margin=meta["params"]["box_expand_px"], reproduce_reference_quirks=not f_mode,
                         **({"fit_iterations": meta["params"]["iterations"], "fit_lr": meta["params"]["lr"]}
                            if f_mode else {}))
    emb0 = encode_image(sam, frames[0])
    targets = []
    for j, oid in enumerate(ids):
        grid = prior.grid_mask(sam, prior.reference_mask_rgb(gt0 == oid, 215), (64, 64))
        st.exact(f"obj{j} ref grid mask", grid, read_mask(out / f"obj{j}_ref_grid_mask.png"))
        targets.append(object_target(sam, emb0, gt0 == oid))
        st.close(f"obj{j} target", targets[-1].flatten(), np.load(out / f"obj{j}_target_feat.npy"), atol=SIM_ATOL)
    targets = torch.cat(targets)
    weights = None
    if f_mode:
        fitted = []
        for j, (oid, exp) in enumerate(st.paired("trained objects", ids, meta["training"])):
            tr: dict = {}
            fit = fit_object_weights(sam, emb0, targets[j:j + 1], gt0 == oid, config,
                                     [row["iteration"] for row in exp["loss_curve"]], tr)
            st.close(f"obj{j} train sim grid", tr["train_sim_grid"], np.load(out / f"obj{j}_train_sim_grid.npy"),
                     atol=SIM_ATOL)
            st.exact(f"obj{j} train points", tr["points"], exp["prompt_points_xy"])
            st.exact(f"obj{j} train box", tr["box"], exp["box_prompt_xyxy"])
            st.close(f"obj{j} train scores", tr["scores"], exp["decoder_scores"], atol=SCORE_ATOL)
            for ours, row in st.paired(f"obj{j} loss curve points", fit.curve, exp["loss_curve"]):
                st.close(f"obj{j} loss curve @{row['iteration']}", ours["weights_before_step"],
                         row["weights_before_step"], atol=WEIGHT_ATOL)
            st.close(f"obj{j} learned weights", fit.weights, exp["learned_weights"], atol=WEIGHT_ATOL)
            fitted.append(fit.weights)
        weights = torch.stack(fitted)
    previous = gt0
    for i, record in st.paired("frames", range(1, len(frames)), meta["frames"]):
        trace: list = []
        logits = video_step(sam, encode_image(sam, frames[i]), targets, _boxes(previous, ids), config, weights,
                            trace=trace).logits
        for j, (t, exp) in enumerate(st.paired(f"frame{i} objects", trace, record["objects"])):
            tag = f"frame{i} obj{j}"
            size = t["final_logits"].numel()
            st.close(f"{tag} sim_grid", t["sim_grid"], np.load(out / f"frame{i}_obj{j}_sim_grid.npy"), atol=SIM_ATOL)
            st.exact(f"{tag} prompt points", t["points"], exp["prompt_points_xy"])
            st.exact(f"{tag} box prompt", t["box"], exp["box_prompt_xyxy"])
            st.close(f"{tag} step1 scores", t["step1_scores"], exp["step1"]["scores"], atol=SCORE_ATOL)
            if f_mode:
                st.area(f"{tag} weighted mask area", t["weighted_mask"].sum(), exp["step1"]["weighted_mask_area"],
                        size)
                st.exact(f"{tag} fallback", t["fallback_used"], exp["step1"]["fallback_used"])
                st.exact(f"{tag} step2 box", t["step2_box"], exp["step2"]["box_xyxy"])
            else:
                for k in range(3):
                    st.area(f"{tag} step1 area {k}", t["step1_masks"][k].sum(), exp["step1"]["mask_areas"][k], size)
                st.exact(f"{tag} step1 chosen", t["step1_chosen"], exp["step1"]["chosen_index"])
            st.close(f"{tag} step2 scores", t["step2_scores"], exp["step2"]["scores"], atol=SCORE_ATOL)
            st.exact(f"{tag} step2 chosen", t["step2_chosen"], exp["step2"]["chosen_index"])
            st.exact(f"{tag} step3 box", t["step3_box"], exp["step3"]["box_xyxy"])
            st.close(f"{tag} step3 scores", t["step3_scores"], exp["step3"]["scores"], atol=SCORE_ATOL)
            st.exact(f"{tag} step3 chosen", t["step3_chosen"], exp["step3"]["chosen_index"])
            st.mask(f"{tag} final mask", t["final_logits"] > 0, read_mask(out / f"frame{i}_obj{j}_final_mask.png"))
            st.close(f"{tag} final logit max/min", [float(t["final_logits"].max()), float(t["final_logits"].min())],
                     [exp["final_logit_stats"]["max"], exp["final_logit_stats"]["min"]], atol=LOGIT_ATOL)
        labels = _label_map(logits, ids)
        st.mask(f"frame{i} label map", labels, read_png(out / "pred_labels" / f"{i:05d}.png"))
        previous = labels


def check_video_true_largest(sam, case_dir: Path, st: Stages):
    """With the uint8 quirk off, pass A picks the truly largest mask (``chosen_index_if_true_largest``).

    Each frame is fed the fixture's previous label map, so pass A sees exactly the reference's prompts.
    """
    out = case_dir / "persam_video"
    meta = _meta(out)
    frames, gt0 = _video_inputs(case_dir)
    ids = [obj["label_value"] for obj in meta["objects"]]
    sam = sam_backend(sam)
    config = VideoConfig(method="persam", topk=meta["params"]["topk"], reproduce_reference_quirks=False)
    targets = torch.cat([object_target(sam, encode_image(sam, frames[0]), gt0 == oid) for oid in ids])
    for i in range(1, len(frames)):
        previous = gt0 if i == 1 else read_png(out / "pred_labels" / f"{i - 1:05d}.png")
        trace: list = []
        video_step(sam, encode_image(sam, frames[i]), targets, _boxes(previous, ids), config, trace=trace)
        for j, (t, exp) in enumerate(st.paired(f"frame{i} objects", trace, meta["frames"][i - 1]["objects"])):
            st.exact(f"frame{i} obj{j} prompt points", t["points"], exp["prompt_points_xy"])
            st.exact(f"frame{i} obj{j} pass A true largest", t["step1_chosen"],
                     exp["step1"]["chosen_index_if_true_largest"])


CHECKS = {"persam": check_persam, "persam_f": check_persam_f}


@pytest.mark.parametrize("encoder", ["stock", "fast"])
@pytest.mark.parametrize("root,case,method", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fixture_case(root: Path, case: dict, method: str, encoder: str):
    """Every stage of every case, with segment_anything's encoder and with vos's fast encoder."""
    assert case.get("name"), f"fixture root {root} cannot be loaded: {case.get('error')}"
    case_dir = root / "cases" / case["name"]
    assert case_dir.is_dir(), f"case folder {case_dir} is missing"
    sam = load_fixture_sam(root, encoder)
    st = Stages(case["name"])
    if method in CHECKS:
        CHECKS[method](sam, case_dir, st)
    elif method in ("persam_video", "persam_video_f"):
        check_video(sam, case_dir, method, st)
    else:
        pytest.fail(f"{case['name']}: unknown method {method!r} in index.json")
    assert st.passed > 0


def test_the_harness_refuses_truncated_cases_and_empty_roots(tmp_path, monkeypatch):
    """A case that yields fewer stages or curve points than its fixture fails instead of comparing a prefix, and a
    fixture root listing no case is a failing case, not a silently empty set."""
    import conformance

    st = Stages("made-up")
    assert st.paired("points", [1, 2], ["a", "b"]) == [(1, "a"), (2, "b")]
    with pytest.raises(conformance.StageMismatch, match="'curve' .*1 items computed, the fixture has 2"):
        st.paired("curve", [1], ["a", "b"])
    (tmp_path / "index.json").write_text(json.dumps({"cases": [], "weights": "w.pt"}))
    monkeypatch.setenv(conformance.ENV, str(tmp_path))
    extra = [c for c in conformance.fixture_cases() if c[1] == tmp_path]
    assert len(extra) == 1 and extra[0][2]["name"] is None and "lists no case" in extra[0][2]["error"]


VIDEO_CASES = [c for c in CASES if c[3] == "persam_video"]


@pytest.mark.parametrize("root,case,method", [c[1:] for c in VIDEO_CASES], ids=[c[0] for c in VIDEO_CASES])
def test_video_pass_a_true_largest_without_quirks(root: Path, case: dict, method: str):
    st = Stages(case["name"])
    check_video_true_largest(load_fixture_sam(root), root / "cases" / case["name"], st)
    assert st.passed > 0
