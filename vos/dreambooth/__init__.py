"""PerSAM-assisted DreamBooth (PerSAM paper, §5): segment the subject in the few training photos with PerSAM and
supervise only the foreground, so the identifier does not absorb the background.

``masks``: instance photos and their subject masks (read, PerSAM-segmented, saved, brought to the latent grid);
``train``: the masked DreamBooth objective and training loop on diffusers' building blocks (imports diffusers
lazily, so ``vos.dreambooth.masks`` works without the ``dreambooth`` extra).
"""
from vos.dreambooth.masks import (InstanceImage, image_tensor, latent_mask, load_instance_images, masks_from_dir,
                                  read_mask, read_reference_mask, save_masks, segment_with_persam)
from vos.dreambooth.train import (LossParts, TrainConfig, TrainResult, dreambooth_loss, load_pipeline,
                                  fine_tune, masked_diffusion_loss, render, save_pipeline)

__all__ = ["InstanceImage", "image_tensor", "latent_mask", "load_instance_images", "masks_from_dir", "read_mask",
           "read_reference_mask", "save_masks", "segment_with_persam", "LossParts", "TrainConfig", "TrainResult",
           "dreambooth_loss", "fine_tune", "load_pipeline", "masked_diffusion_loss", "render", "save_pipeline"]
