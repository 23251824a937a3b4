"""The PerSAM / PerSAM-F image engine (Zhang et al., arXiv 2305.03048) on top of segment_anything's classes."""
from vos.models.sam_backend import ImageEmbedding
from vos.persam.finetune import PerSAMF, PerSAMFState, fit_mask_weights
from vos.persam.persam import PerSAM, Reference, persam_segment
from vos.persam.result import PerSAMResult

__all__ = ["PerSAM", "PerSAMF", "PerSAMResult", "PerSAMFState", "Reference", "ImageEmbedding", "encode_image",
           "fit_mask_weights", "persam_segment"]


def encode_image(sam, image) -> ImageEmbedding:
    """Run the image encoder of a SAM-family model once on an RGB ``uint8 H×W×3`` image."""
    from vos.models.sam_backend import sam_backend

    return sam_backend(sam).encode(image)
