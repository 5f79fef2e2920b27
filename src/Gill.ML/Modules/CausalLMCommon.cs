using System.Text.Json.Nodes;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>Pieces shared by the causal LM backbones: config reading, masks, attention, activations, input checks.</summary>
internal static class CausalLMCommon
{
    public static int GetInt(JsonObject json, string key, string source, int? fallback = null)
    {
        var node = json[key];
        if (node is null)
            return fallback ?? throw new InvalidDataException($"'{source}' has no '{key}'.");
        try { return node.GetValue<int>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        { throw new InvalidDataException($"'{source}': '{key}' must be an integer, found {node.ToJsonString()}.", e); }
    }

    public static int? GetOptionalInt(JsonObject json, string key)
    {
        var node = json[key];
        if (node is null) return null;
        try { return node.GetValue<int>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        { throw new InvalidDataException($"config.json: '{key}' must be an integer or null, found {node.ToJsonString()}.", e); }
    }

    public static double GetDouble(JsonObject json, string key, double fallback)
    {
        var node = json[key];
        if (node is null) return fallback;
        try { return node.GetValue<double>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        { throw new InvalidDataException($"config.json: '{key}' must be a number, found {node.ToJsonString()}.", e); }
    }

    public static bool GetBool(JsonObject json, string key, bool fallback)
    {
        var node = json[key];
        if (node is null) return fallback;
        try { return node.GetValue<bool>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        { throw new InvalidDataException($"config.json: '{key}' must be true or false, found {node.ToJsonString()}.", e); }
    }

    public static string GetString(JsonObject json, string key, string fallback)
    {
        var node = json[key];
        if (node is null) return fallback;
        try { return node.GetValue<string>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        { throw new InvalidDataException($"config.json: '{key}' must be a string, found {node.ToJsonString()}.", e); }
    }

    public static void RequirePositive(int value, string key)
    {
        if (value <= 0) throw new InvalidDataException($"config.json: '{key}' must be positive, found {value}.");
    }

    /// <summary>The Hugging Face <c>torch_dtype</c> name of a scalar type.</summary>
    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float64 => "float64",
        _ => throw new ArgumentException($"Unsupported model dtype {t}.")
    };

    /// <summary>The activation named by config.json's <c>activation_function</c>.</summary>
    public static Func<Tensor, Tensor> Activation(string name) => name switch
    {
        "relu" => x => nn.functional.relu(x),
        "gelu" => x => nn.functional.gelu(x),
        "gelu_new" or "gelu_pytorch_tanh" => x => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        "quick_gelu" => x => x * torch.sigmoid(1.702 * x),
        "silu" or "swish" => x => nn.functional.silu(x),
        _ => throw new InvalidDataException($"config.json: unsupported activation_function '{name}' (supported: relu, gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, silu).")
    };

    public static void CheckActivation(string name) => Activation(name);

    /// <summary>
    /// Validates the input of a forward pass and returns the batch size, new length, past length and the full
    /// attention mask [B, past + T] (int64, on the model device).
    /// </summary>
    public static (long B, long T, long Past, Tensor Mask) PrepareInput(CausalLMInput input, int vocabSize, int embedSize, Device device)
    {
        if ((input.InputIds is null) == (input.InputsEmbeds is null))
            throw new ArgumentException("Give exactly one of InputIds or InputsEmbeds.", nameof(input));
        long b, t;
        if (input.InputIds is { } ids)
        {
            if (ids.dim() != 2) throw new ArgumentException($"InputIds must be [B, T], found {SafeTensors.FormatShape(ids.shape)}.", nameof(input));
            if (ids.dtype is not (ScalarType.Int64 or ScalarType.Int32))
                throw new ArgumentException($"InputIds must be int64, found {ids.dtype}.", nameof(input));
            b = ids.shape[0]; t = ids.shape[1];
            if (ids.numel() > 0)
            {
                long min = ids.min().item<long>(), max = ids.max().item<long>();
                if (min < 0 || max >= vocabSize)
                    throw new ArgumentException($"InputIds contain ids outside [0, {vocabSize}) (min {min}, max {max}).", nameof(input));
            }
        }
        else
        {
            var e = input.InputsEmbeds!;
            if (e.dim() != 3 || e.shape[2] != embedSize)
                throw new ArgumentException($"InputsEmbeds must be [B, T, {embedSize}], found {SafeTensors.FormatShape(e.shape)}.", nameof(input));
            b = e.shape[0]; t = e.shape[1];
        }
        if (t == 0) throw new ArgumentException("The input has no positions (T = 0).", nameof(input));
        long past = input.Cache?.Length ?? 0;
        if (input.Cache is { } cache && past > 0)
        {
            long cachedRows = cache.BatchSize;
            if (cachedRows != b) throw new ArgumentException($"The KV cache holds {cachedRows} rows but the input has {b}.", nameof(input));
        }
        Tensor mask;
        if (input.AttentionMask is { } m)
        {
            if (m.dim() != 2 || m.shape[0] != b || m.shape[1] != past + t)
                throw new ArgumentException(
                    $"AttentionMask must be [B, past + T] = [{b}, {past + t}] (past = {past} cached positions), found {SafeTensors.FormatShape(m.shape)}.", nameof(input));
            mask = m.to(ScalarType.Int64, device);
        }
        else mask = torch.ones(new[] { b, past + t }, ScalarType.Int64, device);
        return (b, t, past, mask);
    }

    /// <summary>Boolean [B, 1, T, past + T] mask: true where query t may attend key s (causal and not padding).</summary>
    public static Tensor AttentionMask4D(Tensor mask2d, long t, long past)
    {
        long s = past + t;
        var causal = torch.ones(new[] { t, s }, ScalarType.Bool, mask2d.device).tril(past);
        var keys = mask2d.to(ScalarType.Bool).unsqueeze(1).unsqueeze(1);
        return causal.unsqueeze(0).unsqueeze(0).logical_and(keys);
    }

    /// <summary>Scaled-dot-product attention with q already scaled; softmax in float32; masked keys get the lowest value.</summary>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor allowed, double dropout, bool training)
    {
        var scores = torch.matmul(q, k.transpose(-1, -2));
        if (scores.dtype != ScalarType.Float32 && scores.dtype != ScalarType.Float64) scores = scores.to(ScalarType.Float32);
        scores = scores.MaskedFill(allowed.logical_not(), scores.dtype == ScalarType.Float64 ? double.MinValue : float.MinValue);
        var probs = torch.softmax(scores, -1).to(v.dtype);
        if (training && dropout > 0) probs = nn.functional.dropout(probs, dropout, true);
        return torch.matmul(probs, v);
    }

    /// <summary>
    /// Appends this step's keys/values to the cache and returns past + new keys/values. The cache stores detached copies;
    /// when the new keys/values carry gradients, the returned tensors keep them attached (past positions stay constant).
    /// </summary>
    public static (Tensor K, Tensor V) AppendToCache(KVCache cache, int layer, Tensor k, Tensor v)
    {
        var (kAll, vAll) = cache.Append(layer, k, v);
        if (!k.requires_grad && !v.requires_grad) return (kAll, vAll);
        long past = kAll.shape[2] - k.shape[2];
        if (past == 0) return (k, v);
        return (torch.cat(new[] { kAll.narrow(2, 0, past), k }, 2), torch.cat(new[] { vAll.narrow(2, 0, past), v }, 2));
    }

    /// <summary>Moves the distinct tensors of an output to the caller's dispose scope (each exactly once).</summary>
    public static void MoveOut(Tensor last, Tensor? logits, List<Tensor>? hidden)
    {
        var moved = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var t in new[] { last, logits }.Concat(hidden ?? Enumerable.Empty<Tensor>()))
            if (t is not null && moved.Add(t)) t.MoveToOuterDisposeScope();
    }

    /// <summary>[B, T, H·D] → [B, H, T, D].</summary>
    public static Tensor SplitHeads(Tensor x, long heads) => x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2);

    /// <summary>[B, H, T, D] → [B, T, H·D].</summary>
    public static Tensor MergeHeads(Tensor x) => x.transpose(1, 2).contiguous().view(x.shape[0], x.shape[2], -1);
}
