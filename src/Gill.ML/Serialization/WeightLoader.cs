using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Serialization;

/// <summary>
/// Strict loading of a TorchSharp module's parameters and buffers from a safetensors checkpoint: every module key must be
/// present with the same shape, and every checkpoint key in scope must be used. Errors name the key, the expected shape
/// and the shape found. Values are converted to the module tensor's dtype (fp16/bf16 checkpoints into fp32 modules, …).
/// </summary>
internal static class WeightLoader
{
    /// <param name="module">The module whose <c>state_dict()</c> is filled in place.</param>
    /// <param name="checkpoint">The opened checkpoint.</param>
    /// <param name="toCheckpointKey">Maps a module key to the key it is stored under.</param>
    /// <param name="inScope">Which checkpoint keys belong to this module (others, e.g. the text tower of a full CLIP
    /// checkpoint, are ignored). Keys in scope that no module key maps to are an error.</param>
    /// <param name="ignoredCheckpointKey">Checkpoint keys to skip silently (e.g. stored causal-mask buffers).</param>
    /// <param name="optionalModuleKey">Module keys that may be absent from the checkpoint (kept as initialised).</param>
    public static void Load(
        nn.Module module,
        SafeTensorsCheckpoint checkpoint,
        Func<string, string> toCheckpointKey,
        Func<string, bool>? inScope = null,
        Func<string, bool>? ignoredCheckpointKey = null,
        Func<string, bool>? optionalModuleKey = null)
    {
        inScope ??= _ => true;
        ignoredCheckpointKey ??= _ => false;
        optionalModuleKey ??= _ => false;
        var used = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<string>();
        var state = module.state_dict();
        using var noGrad = torch.no_grad();
        foreach (var (moduleKey, tensor) in state)
        {
            var ckKey = toCheckpointKey(moduleKey);
            if (!checkpoint.Tensors.TryGetValue(ckKey, out var info))
            {
                if (!optionalModuleKey(moduleKey))
                    missing.Add($"'{ckKey}' (expected shape {SafeTensors.FormatShape(tensor.shape)})");
                continue;
            }
            if (!info.Shape.SequenceEqual(tensor.shape))
                throw new InvalidDataException(
                    $"Shape mismatch for '{ckKey}' in checkpoint '{checkpoint.Source}': expected {SafeTensors.FormatShape(tensor.shape)}, found {info.ShapeText}.");
            checkpoint.CopyTo(ckKey, tensor);
            used.Add(ckKey);
        }
        if (missing.Count > 0)
            throw new InvalidDataException(
                $"Checkpoint '{checkpoint.Source}' is missing {missing.Count} tensor(s): {string.Join(", ", missing.Take(10))}{(missing.Count > 10 ? ", …" : "")}.");
        var unexpected = checkpoint.Tensors.Keys
            .Where(k => inScope(k) && !ignoredCheckpointKey(k) && !used.Contains(k))
            .OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException(
                $"Checkpoint '{checkpoint.Source}' has {unexpected.Count} unexpected tensor(s): {string.Join(", ", unexpected.Take(10).Select(k => $"'{k}' {checkpoint.Tensors[k].ShapeText}"))}{(unexpected.Count > 10 ? ", …" : "")}.");
    }

    /// <summary>Lists <c>key shape</c> lines for every entry of a module's state dict, sorted by key (approval files).</summary>
    public static IEnumerable<string> DescribeStateDict(nn.Module module) =>
        module.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => $"{kv.Key} {SafeTensors.FormatShape(kv.Value.shape)}");
}
