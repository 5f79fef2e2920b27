using System.Text.Json.Nodes;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Clip;

/// <summary>Where and in which element type a CLIP model is placed.</summary>
public sealed record ClipLoadOptions
{
    /// <summary>The device to run on (CPU when null). Models are built and loaded on the CPU, then moved.</summary>
    public Device? Device { get; init; }

    /// <summary>
    /// Element type of the parameters (float32 by default). Checkpoints stored in another floating type (fp16, bf16, …)
    /// are converted on load.
    /// </summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    internal Device ResolvedDevice => Device ?? torch.CPU;

    internal void Validate()
    {
        if (DType is not (ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64))
            throw new ArgumentException($"ClipLoadOptions.DType must be a floating-point type, got {DType}.");
    }
}

/// <summary>Shared building, loading and saving of CLIP checkpoints in the Hugging Face layout.</summary>
internal static class ClipCheckpointIO
{
    public const string WeightsFile = "model.safetensors";
    public const string VisionPrefix = "vision_model.";
    public const string TextPrefix = "text_model.";
    public const string VisualProjectionKey = "visual_projection.weight";
    public const string TextProjectionKey = "text_projection.weight";
    public const string VisionPositionIds = "vision_model.embeddings.position_ids";
    public const string TextPositionIds = "text_model.embeddings.position_ids";

    /// <summary>Loads weights into a freshly built root: dtype first, strict load, then the device; frozen, eval mode.</summary>
    public static void LoadInto(ClipRoot root, SafeTensorsCheckpoint checkpoint, Func<string, bool> inScope, ClipLoadOptions options)
    {
        if (options.DType != ScalarType.Float32) root.to(options.DType);
        WeightLoader.Load(root, checkpoint, k => k, inScope, k => k is VisionPositionIds or TextPositionIds);
        var device = options.ResolvedDevice;
        if (device.type != DeviceType.CPU) root.to(device);
        SetTrainable(root, false);
    }

    public static void SetTrainable(nn.Module root, bool trainable)
    {
        foreach (var p in root.parameters()) p.requires_grad = trainable;
        if (trainable) root.train(); else root.eval();
    }

    public static ClipRoot Create(Func<ClipRoot> build, ClipLoadOptions options, long? seed)
    {
        options.Validate();
        var root = GlobalRandom.Maybe(seed, () =>
        {
            var r = build();
            r.Initialize();
            return r;
        });
        if (options.DType != ScalarType.Float32) root.to(options.DType);
        var device = options.ResolvedDevice;
        if (device.type != DeviceType.CPU) root.to(device);
        SetTrainable(root, false);
        return root;
    }

    /// <summary>
    /// Writes <c>model.safetensors</c> (every parameter, plus the int64 <c>position_ids</c> buffers of the published
    /// layout) and then <c>config.json</c>, each atomically.
    /// </summary>
    public static void Save(ClipRoot root, string folder, JsonObject config)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        Directory.CreateDirectory(folder);
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        ScalarType? dtype = null;
        foreach (var (key, t) in root.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            tensors.Add(new(key, t.detach().cpu().contiguous()));
            dtype ??= t.dtype;
        }
        foreach (var (key, length) in root.PositionIdBuffers())
            tensors.Add(new(key, torch.arange(length, dtype: ScalarType.Int64).unsqueeze(0)));
        SafeTensors.Save(Path.Combine(folder, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        config["torch_dtype"] = dtype switch
        {
            ScalarType.Float16 => "float16",
            ScalarType.BFloat16 => "bfloat16",
            ScalarType.Float64 => "float64",
            _ => "float32",
        };
        ClipConfigJson.WriteAtomic(Path.Combine(folder, ClipConfigJson.ConfigFile), config);
    }

    public static InvalidDataException UnknownModelType(string type, string path, params string[] expected) =>
        new($"'{path}' has model_type '{type}', which is not a CLIP model this loader reads (expected {string.Join(" or ", expected.Select(e => $"'{e}'"))}).");

    /// <summary>Moves an input to the model's device and checks nothing else (callers check shapes).</summary>
    public static Tensor ToDevice(Tensor t, Device device) =>
        t.device.type == device.type && t.device.index == device.index ? t.alias() : t.to(device);
}
