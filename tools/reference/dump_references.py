"""Reference values computed with the Python ecosystem, for Gill.ML's tests.

Run where PyTorch/transformers/Pillow/sacrebleu are installed (no weights are downloaded: models are built from configs
on the meta device). Writes JSON files into the folder given as the first argument:
  keys-*.json           state-dict key names and shapes of full-size architectures (approval lists)
  pil-bicubic.json      Pillow bicubic resize of a fixed small image (CLIP preprocessing reference)
  clip-processor.json   transformers CLIPImageProcessor output for the same image
  sacrebleu.json        corpus BLEU of a small fixed example
  torchvision-keys.json key names of torchvision's AlexNet/VGG16/SqueezeNet1.1 feature trunks
"""
import json, os, sys, traceback

out = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(out, exist_ok=True)

def save(name, obj):
    with open(os.path.join(out, name), "w") as f:
        json.dump(obj, f, indent=1)

def guarded(fn):
    try:
        fn()
    except Exception:
        traceback.print_exc()

versions = {}
for mod in ["torch", "transformers", "PIL", "sacrebleu", "numpy", "torchvision", "diffusers", "scipy", "safetensors"]:
    try:
        m = __import__(mod)
        versions[mod] = getattr(m, "__version__", "?")
    except Exception as e:
        versions[mod] = None
save("versions.json", versions)
print(versions)

def keys():
    import torch
    from transformers import OPTConfig, OPTForCausalLM, GPT2Config, GPT2LMHeadModel, CLIPConfig, CLIPModel
    def dump(name, model):
        sd = model.state_dict()
        save(f"keys-{name}.json", {k: list(v.shape) for k, v in sd.items()})
    with torch.device("meta"):
        dump("opt-125m", OPTForCausalLM(OPTConfig(hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                                                   vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=768)))
        dump("opt-6.7b", OPTForCausalLM(OPTConfig(hidden_size=4096, num_hidden_layers=32, ffn_dim=16384, num_attention_heads=32,
                                                   vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=4096)))
        dump("gpt2", GPT2LMHeadModel(GPT2Config()))
        cfg = CLIPConfig(
            text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                             vocab_size=49408, max_position_embeddings=77, projection_dim=768),
            vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                               patch_size=14, image_size=224, projection_dim=768),
            projection_dim=768)
        dump("clip-vit-large-patch14", CLIPModel(cfg))

def pil():
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(1234)
    arr = rng.randint(0, 256, size=(29, 37, 3), dtype=np.uint8)  # H=29, W=37
    img = Image.fromarray(arr, "RGB")
    res = {"input_hwc": arr.tolist()}
    for (w, h) in [(24, 19), (30, 24), (74, 58), (18, 14)]:
        res[f"bicubic_{w}x{h}"] = np.asarray(img.resize((w, h), Image.BICUBIC)).tolist()
    save("pil-bicubic.json", res)
    try:
        from transformers import CLIPImageProcessor
        proc = CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
        pv = proc(images=img, return_tensors="np")["pixel_values"]
        save("clip-processor.json", {"size": 24, "crop": 24, "pixel_values": pv.tolist()})
    except Exception:
        traceback.print_exc()

def bleu():
    import sacrebleu
    hyps = ["a small red circle on the left", "the cat sat on the mat", "two blue squares above a green triangle",
            "there is a large yellow star"]
    refs = ["a small red circle on the left side", "the cat is sitting on the mat", "a blue square above a green triangle",
            "there is a large yellow star in the middle"]
    b = sacrebleu.corpus_bleu(hyps, [refs])
    save("sacrebleu.json", {"hyps": hyps, "refs": refs, "score": b.score, "bp": b.bp, "sys_len": b.sys_len,
                            "ref_len": b.ref_len, "counts": list(b.counts), "totals": list(b.totals),
                            "precisions": list(b.precisions), "signature": str(b.format(signature=True))})

def tv():
    import torch, torchvision
    with torch.device("meta"):
        res = {
            "alexnet.features": {k: list(v.shape) for k, v in torchvision.models.alexnet().features.state_dict().items()},
            "vgg16.features": {k: list(v.shape) for k, v in torchvision.models.vgg16().features.state_dict().items()},
            "squeezenet1_1.features": {k: list(v.shape) for k, v in torchvision.models.squeezenet1_1().features.state_dict().items()},
        }
    save("torchvision-keys.json", res)

for f in (keys, pil, bleu, tv):
    guarded(f)
print("done:", sorted(os.listdir(out)))
