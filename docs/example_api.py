import minidiffusion
from minidiffusion.images import save_grid

model = minidiffusion.load("runs/quick")  # a run directory (its newest checkpoint) or one checkpoint file
images = model.sample(16, seed=0)  # the run's own [sample] settings; uint8 (16, C, H, W), image k fixed by (seed, k)
save_grid(images, "runs/api_samples.png")
print(model, tuple(images.shape))
