using System.Text.Json;
using System.Text.Json.Nodes;
using Gill.ML.Modules.Gpt2;
using Gill.ML.Modules.Opt;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>Where and in which precision a causal LM is placed.</summary>
public sealed class CausalLMLoadOptions
{
    /// <summary>Target device (default CPU). The model is built and loaded on the CPU, then moved.</summary>
    public Device? Device { get; init; }

    /// <summary>Target device by name ("cpu", "cuda", "cuda:1"); used when <see cref="Device"/> is null.</summary>
    public string? DeviceName { get; init; }

    /// <summary>Parameter element type (default float32); fp16/bf16 checkpoints are converted into it.</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    internal Device ResolveDevice() => Device ?? (DeviceName is { } n ? new Device(n) : CPU);

    internal void Validate()
    {
        if (DType is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64))
            throw new ArgumentException($"CausalLMLoadOptions.DType must be a floating type (float32, float16, bfloat16, float64), found {DType}.");
    }
}

/// <summary>
/// Loading, creating and saving causal language model backbones in the Hugging Face folder layout
/// (config.json + model.safetensors or a sharded model.safetensors.index.json). Supported <c>model_type</c>s: "opt", "gpt2".
/// </summary>
public static class CausalLM
{
    /// <summary>The <c>model_type</c> values this library can load.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = new[] { "opt", "gpt2" };

    /// <summary>
    /// Loads a model from a Hugging Face folder. Keys are checked strictly (every parameter present with its shape, no
    /// unknown tensors); keys with or without the <c>model.</c>/<c>transformer.</c> prefix are accepted, as is a stored
    /// tied <c>lm_head.weight</c>. The model comes back frozen, in evaluation mode, on <see cref="CausalLMLoadOptions.Device"/>.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="InvalidDataException">Unknown model_type, bad config, or missing/unexpected/mis-shaped tensors.</exception>
    public static CausalLMModel Load(string folder, CausalLMLoadOptions? options = null)
    {
        options ??= new CausalLMLoadOptions();
        options.Validate();
        var config = ReadConfig(folder);
        string weights = Path.Combine(folder, "model.safetensors");
        string index = Path.Combine(folder, "model.safetensors.index.json");
        if (!File.Exists(weights) && !File.Exists(index))
            throw new FileNotFoundException(
                $"No weights in '{Path.GetFullPath(folder)}': expected model.safetensors or model.safetensors.index.json (convert .bin checkpoints to safetensors first).", weights);
        using var checkpoint = SafeTensorsCheckpoint.Open(folder);
        var model = Build(config, CPU, options.DType);
        try
        {
            LoadWeights(model, checkpoint);
            var device = options.ResolveDevice();
            if (device.type != DeviceType.CPU) model.to(device);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Reads a folder's config.json into the configuration of its model type.</summary>
    public static CausalLMConfig ReadConfig(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Model folder not found: '{Path.GetFullPath(folder)}'.");
        string path = Path.Combine(folder, "config.json");
        if (!File.Exists(path))
            throw new FileNotFoundException($"config.json not found in model folder '{Path.GetFullPath(folder)}'.", path);
        JsonObject json;
        try
        {
            json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                   ?? throw new InvalidDataException($"'{path}' does not hold a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
        return ParseConfig(json, path);
    }

    /// <summary>Parses a config.json object, dispatching on <c>model_type</c>.</summary>
    public static CausalLMConfig ParseConfig(JsonObject json, string source)
    {
        var type = json["model_type"]?.GetValue<string>();
        return type switch
        {
            "opt" => OptConfig.FromJson(json, source),
            "gpt2" => Gpt2Config.FromJson(json, source),
            null => throw new InvalidDataException($"'{source}' has no 'model_type' (supported: {string.Join(", ", SupportedModelTypes)})."),
            _ => throw new InvalidDataException($"Unsupported model_type '{type}' in '{source}' (supported: {string.Join(", ", SupportedModelTypes)})."),
        };
    }

    /// <summary>
    /// Creates a randomly initialised model (the reference initialisation: normal(0, init_std) weights, zero biases, unit
    /// norms) for pretraining. It comes back frozen and in evaluation mode: call <see cref="CausalLMModel.SetTrainable"/>(true) to train.
    /// </summary>
    /// <param name="config">An <see cref="OptConfig"/> or <see cref="Gpt2Config"/>.</param>
    /// <param name="options">Device and dtype.</param>
    /// <param name="seed">Seed of the initialisation (reproducible weights); null uses the global generator.</param>
    public static CausalLMModel Create(CausalLMConfig config, CausalLMLoadOptions? options = null, long? seed = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        options ??= new CausalLMLoadOptions();
        options.Validate();
        var model = Build(config, CPU, options.DType);
        try
        {
            using var generator = seed is long s ? new Generator((ulong)s, CPU) : null;
            model.InitializeWeights(generator);
            var device = options.ResolveDevice();
            if (device.type != DeviceType.CPU) model.to(device);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Saves a model as a Hugging Face folder (config.json + model.safetensors with the full module keys, without the tied
    /// lm_head, in the model's dtype). Each file is written atomically; <see cref="Load"/> reads the folder back.
    /// </summary>
    public static void Save(CausalLMModel model, string folder)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(folder);
        Directory.CreateDirectory(folder);
        var state = model.state_dict();
        SafeTensors.Save(Path.Combine(folder, "model.safetensors"), state.OrderBy(kv => kv.Key, StringComparer.Ordinal),
            new Dictionary<string, string> { ["format"] = "pt" });
        var json = model.Config.ToJson(model.DType).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        string path = Path.Combine(folder, "config.json");
        string tmp = Path.Combine(folder, ".config.json." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            File.WriteAllText(tmp, json);
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Builds the module of a configuration without loading weights (device may be <c>meta</c>).</summary>
    internal static CausalLMModel Build(CausalLMConfig config, Device device, ScalarType dtype) => config switch
    {
        OptConfig o => new OptForCausalLM(o, device, dtype),
        Gpt2Config g => new Gpt2LMHeadModel(g, device, dtype),
        _ => throw new ArgumentException($"Unsupported configuration type {config.GetType().Name} (model_type '{config.ModelType}')."),
    };

    /// <summary>Strictly loads a checkpoint into a built model, with or without the model prefix.</summary>
    internal static void LoadWeights(CausalLMModel model, SafeTensorsCheckpoint checkpoint)
    {
        bool prefixed = model.HasPrefix(checkpoint);
        model.CheckTiedHead(checkpoint);
        WeightLoader.Load(model, checkpoint, k => model.ToCheckpointKey(k, prefixed), ignoredCheckpointKey: model.IsIgnoredCheckpointKey);
    }

    /// <summary>
    /// The <c>key shape</c> lines a public Hub checkpoint of this model stores (OPT: <c>decoder.*</c> without lm_head;
    /// GPT-2: no <c>transformer.</c> prefix, with the <c>attn.bias</c> buffers), sorted by key.
    /// </summary>
    internal static IEnumerable<string> DescribeHubCheckpoint(CausalLMModel model) =>
        model.state_dict().Select(kv => (Key: model.ToCheckpointKey(kv.Key, false), Shape: kv.Value.shape))
            .Concat(model.HubExtraEntries())
            .OrderBy(e => e.Key, StringComparer.Ordinal)
            .Select(e => $"{e.Key} {SafeTensors.FormatShape(e.Shape)}");
}
