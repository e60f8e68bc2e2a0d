"""Images: folders of photos, transforms, and ImageNet ResNets to fine-tune."""
