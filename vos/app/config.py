"""The app's server options and the choices its page offers (models, methods)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Tuple

from vos.methods import METHODS, method_for_model_name
from vos.models.registry import MODELS
from vos.runs import ModelOptions

#: What each model family needs besides vos's own dependencies (the importable package).
_FAMILY_PACKAGE = {"mobile_sam": "segment_anything_hq", "hq": "segment_anything_hq", "sam2": "sam2"}
#: The demo video of the source repository (not in an installed wheel).
DEMO_VIDEO = Path(__file__).resolve().parents[2] / "demo" / "apple.mp4"
_METHOD_LABELS = {"persam_f": "PerSAM-F", "persam": "PerSAM (training-free)", "sam2": "SAM 2"}


def _importable(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@dataclass(frozen=True)
class AppConfig:
    """The server's options: ``model`` (the default model of the page; its ``checkpoint`` applies to that model
    only, the others use their official file in the cache), ``out`` (each session's runs go in a folder under it),
    ``host`` and ``port`` (the only address the app listens on), ``demo`` (the video of the page's demo button).
    """

    model: ModelOptions
    out: Path
    host: str = "127.0.0.1"
    port: int = 7860
    demo: Path = DEMO_VIDEO

    def check(self) -> None:
        """Fail before serving on what no page could run: an unknown model, ``bf16`` where the device has no fast
        bfloat16, an ``out`` folder that cannot be written (each an :class:`~vos.errors.InputError` /
        :class:`~vos.errors.OutputError` naming the option)."""
        from vos.models import check_precision, default_device
        from vos.models.registry import get_spec
        from vos.runs.folder import check_writable

        get_spec(self.model.name)
        check_precision(self.model.precision, self.model.device or default_device())
        check_writable(self.out, "--out")

    def model_for(self, name: str) -> ModelOptions:
        """The options of model ``name`` chosen in the page (device, encoder and random weights as the server's)."""
        if name == self.model.name:
            return self.model
        return replace(self.model, name=name, checkpoint=None)

    def model_names(self) -> List[str]:
        """The server's model, then every registered model whose package is installed (test-size configurations
        only when they are the server's model)."""
        names = [self.model.name]
        for spec in MODELS.values():
            if spec.family == "test" or spec.name in names:
                continue
            if spec.family not in _FAMILY_PACKAGE or _importable(_FAMILY_PACKAGE[spec.family]):
                names.append(spec.name)
        return names

    @staticmethod
    def method_choices() -> List[Tuple[str, str]]:
        """``(label, method name)`` of each method whose engine can run here (SAM 2 needs the sam2 package)."""
        return [(_METHOD_LABELS.get(m.name, m.name), m.name) for m in METHODS.values()
                if m.family != "sam2" or _importable("sam2")]

    @staticmethod
    def default_method(model_name: str) -> str:
        """The command line's default method on that model (persam_f on SAM models, sam2 on SAM 2)."""
        return method_for_model_name(model_name).name
