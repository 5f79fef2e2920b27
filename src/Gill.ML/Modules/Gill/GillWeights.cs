using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>
/// Safetensors persistence of <see cref="GillHeads"/> under the original GILL names. Two layouts load:
/// <list type="bullet">
/// <item>this library's: keys without a prefix, E_img as <c>img_token_embeddings</c> [r, D];</item>
/// <item>a converted original checkpoint (<c>pretrained_ckpt.pth.tar</c> state dict saved as safetensors): keys
/// prefixed <c>model.</c>, E_img as <c>model.input_embeddings.weight</c> holding only the r rows (as the pruned
/// release does) or the whole resized table (then the rows at the config's [IMG] ids are taken).</item>
/// </list>
/// Loading is strict: every trainable tensor must be present with its shape, and no unknown tensor may remain.
/// </summary>
public static class GillWeights
{
    private const string OriginalPrefix = "model.";
    private const string ImgKey = "img_token_embeddings";
    private const string OriginalImgKey = "input_embeddings.weight";
    private const string LogitScaleKey = "logit_scale";

    /// <summary>Writes every trainable tensor (float32) atomically to a safetensors file.</summary>
    public static void Save(GillHeads heads, string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(heads);
        var meta = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = "pt",
            ["gill_layout"] = "gill-heads-v1",
            ["text_fc_mode"] = heads.Config.TextFcMode.ToString(),
        };
        if (metadata is not null) foreach (var (k, v) in metadata) meta[k] = v;
        SafeTensors.Save(path, heads.state_dict().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value)), meta);
    }

    /// <summary>Loads trainable tensors from a safetensors file or sharded folder (either layout) into <paramref name="heads"/>.</summary>
    public static void Load(GillHeads heads, string path)
    {
        ArgumentNullException.ThrowIfNull(heads);
        using var checkpoint = SafeTensorsCheckpoint.Open(path);
        Load(heads, checkpoint);
    }

    /// <summary>Loads trainable tensors from an opened checkpoint (either layout) into <paramref name="heads"/>.</summary>
    public static void Load(GillHeads heads, SafeTensorsCheckpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(heads);
        ArgumentNullException.ThrowIfNull(checkpoint);
        var keys = checkpoint.Tensors.Keys;
        bool original = !keys.Contains(LogitScaleKey) && keys.Contains(OriginalPrefix + LogitScaleKey);
        string prefix = original ? OriginalPrefix : "";
        var used = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<string>();
        using var noGrad = torch.no_grad();
        foreach (var (moduleKey, tensor) in heads.state_dict())
        {
            string? ckKey = prefix + moduleKey;
            if (moduleKey == ImgKey && !checkpoint.Contains(ckKey))
                ckKey = checkpoint.Contains(prefix + OriginalImgKey) ? prefix + OriginalImgKey : null;
            if (ckKey is null || !checkpoint.Contains(ckKey))
            {
                missing.Add($"'{prefix + moduleKey}' (expected shape {SafeTensors.FormatShape(tensor.shape)})");
                continue;
            }
            var info = checkpoint.Tensors[ckKey];
            if (moduleKey == ImgKey && info.Shape.Length == 2 && info.Shape[0] != tensor.shape[0] && info.Shape[1] == tensor.shape[1])
            {
                CopyImgRowsFromFullTable(heads.Config, checkpoint, ckKey, info, tensor);
            }
            else if (info.Shape.SequenceEqual(tensor.shape))
            {
                checkpoint.CopyTo(ckKey, tensor);
            }
            else if (info.NumberOfElements == tensor.NumberOfElements && tensor.NumberOfElements == 1)
            {
                // Scalars stored as [] or [1] (logit_scale).
                using var loaded = checkpoint.Load(ckKey, tensor.dtype);
                tensor.copy_(loaded.reshape(tensor.shape));
            }
            else
            {
                throw new InvalidDataException(
                    $"Shape mismatch for '{ckKey}' in checkpoint '{checkpoint.Source}': expected {SafeTensors.FormatShape(tensor.shape)}, found {info.ShapeText}. " +
                    $"Check that the GILL config (n_visual_tokens, num_tokens, ret_emb_dim, gen_emb_dim, text_fc_mode, mapper sizes) matches the checkpoint.");
            }
            used.Add(ckKey);
        }
        if (missing.Count > 0)
            throw new InvalidDataException(
                $"Checkpoint '{checkpoint.Source}' is missing {missing.Count} GILL tensor(s): {string.Join(", ", missing.Take(10))}{(missing.Count > 10 ? ", …" : "")}.");
        var unexpected = keys.Where(k => !used.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException(
                $"Checkpoint '{checkpoint.Source}' has {unexpected.Count} tensor(s) that are not GILL trainable weights: " +
                $"{string.Join(", ", unexpected.Take(10).Select(k => $"'{k}' {checkpoint.Tensors[k].ShapeText}"))}{(unexpected.Count > 10 ? ", …" : "")}.");
    }

    private static void CopyImgRowsFromFullTable(GillConfig config, SafeTensorsCheckpoint checkpoint, string key, SafeTensorInfo info, Tensor destination)
    {
        long rows = info.Shape[0];
        int maxId = config.ImgTokenIds.Max();
        if (maxId >= rows)
            throw new InvalidDataException(
                $"'{key}' in checkpoint '{checkpoint.Source}' has {rows} rows, which is neither num_tokens = {destination.shape[0]} nor a full table containing the [IMG] id {maxId}.");
        using var scope = torch.NewDisposeScope();
        var full = checkpoint.Load(key, destination.dtype);
        var idx = torch.tensor(config.ImgTokenIds.Select(i => (long)i).ToArray());
        destination.copy_(full.index_select(0, idx));
    }
}
