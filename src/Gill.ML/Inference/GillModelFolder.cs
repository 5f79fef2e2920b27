using System.Text.Json;
using System.Text.Json.Serialization;
using Gill.ML.Generation;
using Gill.ML.Modules;
using Gill.ML.Retrieval;
using Gill.ML.Stages.VisualFeatures;
using Gill.ML.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Inference;

/// <summary>Options of <see cref="GillModel.Load"/>: device/dtype, and parts given as instances instead of manifest entries.</summary>
public sealed class GillModelLoadOptions
{
    /// <summary>Device of the LM and heads (default CPU).</summary>
    public Device? Device { get; init; }

    /// <summary>Element type of the LM; null uses the manifest's <c>lm_dtype</c> (default float32).</summary>
    public ScalarType? LanguageModelDType { get; init; }

    /// <summary>Visual encoder to use instead of the manifest's <c>visual_encoder</c> entry (not owned by the model).</summary>
    public IVisualEncoder? VisualEncoder { get; init; }

    /// <summary>Image generator to use instead of the manifest's <c>generator</c> entry (owned by the model).</summary>
    public IImageGenerator? ImageGenerator { get; init; }

    /// <summary>Open the manifest's retrieval gallery and context memory (off when (re)building them).</summary>
    public bool LoadIndexes { get; init; } = true;

    /// <summary>Verify the retrieval index checksum on load (reads the whole file once).</summary>
    public bool VerifyIndexChecksum { get; init; } = true;
}

/// <summary>A part loaded by kind: <c>{"type": "...", "path": "..."}</c>.</summary>
public sealed class GillComponentEntry
{
    /// <summary>Kind: visual encoders <c>onnx-resnet18</c>, <c>clip</c>, <c>world</c>; generators <c>onnx-stable-diffusion</c>, <c>world-decoder</c>.</summary>
    [JsonPropertyName("type")] public string Type { get; set; } = "";

    /// <summary>Folder or file, relative to the model folder or absolute.</summary>
    [JsonPropertyName("path")] public string? Path { get; set; }
}

/// <summary>The retrieval-augmented context memory entry of the manifest.</summary>
public sealed class GillMemoryEntry
{
    /// <summary>Index file over the memory's images.</summary>
    [JsonPropertyName("index")] public string Index { get; set; } = "";

    /// <summary>JSON object mapping image id → caption.</summary>
    [JsonPropertyName("captions")] public string Captions { get; set; } = "";

    /// <summary>Folder relative image ids are resolved against.</summary>
    [JsonPropertyName("image_root")] public string ImageRoot { get; set; } = ".";
}

/// <summary>
/// The manifest <c>gill-model.json</c> of a GILL model folder. Paths are relative to the folder (or absolute):
/// <code>
/// my-gill/
///   gill-model.json        {"format":"gill-model","version":1,"gill":"gill","lm":"../opt-6.7b","tokenizer":null,
///                           "lm_dtype":"float32","visual_encoder":{"type":"onnx-resnet18","path":null},
///                           "generator":{"type":"onnx-stable-diffusion","path":"sd"},
///                           "decision_classifier":"decision.safetensors","decision_kind":"Released",
///                           "index":"gallery.gidx","memory":null}
///   gill/                  GillCoreModel.Save output: model_args.json + model.safetensors
///   decision.safetensors   GillDecisionClassifier.Save output (optional)
///   gallery.gidx           GillRetrievalIndex file (optional; built with this model: 'gill index build')
/// </code>
/// <c>lm</c> is a CausalLM folder (config.json + safetensors); <c>tokenizer</c> (default: the LM folder) holds
/// vocab.json + merges.txt and optionally added_tokens.json — when the [IMG] tokens are missing they are added in GILL's
/// order. Only <c>gill</c> and <c>lm</c> are required.
/// </summary>
public sealed class GillModelManifest
{
    /// <summary>Always "gill-model".</summary>
    [JsonPropertyName("format")] public string Format { get; set; } = "gill-model";

    /// <summary>Manifest version (1).</summary>
    [JsonPropertyName("version")] public int Version { get; set; } = 1;

    /// <summary>GillCoreModel folder.</summary>
    [JsonPropertyName("gill")] public string Gill { get; set; } = "gill";

    /// <summary>Language model folder.</summary>
    [JsonPropertyName("lm")] public string LanguageModel { get; set; } = "lm";

    /// <summary>Tokenizer folder (null: the LM folder).</summary>
    [JsonPropertyName("tokenizer")] public string? Tokenizer { get; set; }

    /// <summary>LM dtype: float32, float16 or bfloat16.</summary>
    [JsonPropertyName("lm_dtype")] public string LanguageModelDType { get; set; } = "float32";

    /// <summary>Visual encoder (optional).</summary>
    [JsonPropertyName("visual_encoder")] public GillComponentEntry? VisualEncoder { get; set; }

    /// <summary>Image generator (optional).</summary>
    [JsonPropertyName("generator")] public GillComponentEntry? Generator { get; set; }

    /// <summary>Decision classifier weights (optional).</summary>
    [JsonPropertyName("decision_classifier")] public string? DecisionClassifier { get; set; }

    /// <summary>Kind of the decision classifier.</summary>
    [JsonPropertyName("decision_kind")] public GillDecisionKind DecisionKind { get; set; } = GillDecisionKind.Released;

    /// <summary>Retrieval gallery index (optional).</summary>
    [JsonPropertyName("index")] public string? Index { get; set; }

    /// <summary>Context memory (optional).</summary>
    [JsonPropertyName("memory")] public GillMemoryEntry? Memory { get; set; }

    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };
}

/// <summary>Reads and writes GILL model folders (<see cref="GillModelManifest"/>).</summary>
public static class GillModelFolder
{
    /// <summary>Name of the manifest file.</summary>
    public const string ManifestFileName = "gill-model.json";

    /// <summary>Reads a folder's manifest.</summary>
    public static GillModelManifest ReadManifest(string folder)
    {
        var path = Path.Combine(folder, ManifestFileName);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"GILL model folder '{folder}' does not exist.");
        if (!File.Exists(path)) throw new FileNotFoundException($"GILL model folder '{folder}' has no {ManifestFileName}.", path);
        GillModelManifest? m;
        try
        {
            m = JsonSerializer.Deserialize<GillModelManifest>(File.ReadAllText(path), GillModelManifest.JsonOptions);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not a valid GILL model manifest: {e.Message}", e);
        }
        if (m is null || m.Format != "gill-model") throw new InvalidDataException($"'{path}' is not a GILL model manifest (format must be \"gill-model\").");
        if (m.Version != 1) throw new InvalidDataException($"'{path}' has manifest version {m.Version}; this library reads version 1.");
        return m;
    }

    /// <summary>Writes a manifest into a folder (atomically).</summary>
    public static void WriteManifest(string folder, GillModelManifest manifest)
    {
        Directory.CreateDirectory(folder);
        Serialization.AtomicFile.WriteAllText(Path.Combine(folder, ManifestFileName), JsonSerializer.Serialize(manifest, GillModelManifest.JsonOptions));
    }

    /// <summary>Loads a GILL model folder.</summary>
    public static GillModel Load(string folder, GillModelLoadOptions? options = null)
    {
        options ??= new GillModelLoadOptions();
        var m = ReadManifest(folder);
        string Resolve(string p) => Path.IsPathRooted(p) ? p : Path.GetFullPath(Path.Combine(folder, p));
        var dtype = options.LanguageModelDType ?? m.LanguageModelDType.ToLowerInvariant() switch
        {
            "float32" or "fp32" => ScalarType.Float32,
            "float16" or "fp16" => ScalarType.Float16,
            "bfloat16" or "bf16" => ScalarType.BFloat16,
            var other => throw new InvalidDataException($"{ManifestFileName}: unknown lm_dtype '{other}' (float32, float16, bfloat16)."),
        };
        var disposables = new List<IDisposable>();
        try
        {
            var lm = CausalLM.Load(Resolve(m.LanguageModel), new CausalLMLoadOptions { DType = dtype, Device = options.Device });
            disposables.Add(lm);
            var core = GillCoreModel.Load(lm, Resolve(m.Gill), ownsLanguageModel: true);
            disposables.Remove(lm);
            disposables.Add(core);
            var tokenizer = GillTokenizer.FromFolder(Resolve(m.Tokenizer ?? m.LanguageModel));
            if (!tokenizer.TryGetTokenId("[IMG0]", out _)) tokenizer.AddGillTokens(core.ImgTokenIds.Count);

            var encoder = options.VisualEncoder ?? LoadEncoder(m.VisualEncoder, Resolve);
            if (options.VisualEncoder is null && encoder is IDisposable de) disposables.Add(de);
            var generator = options.ImageGenerator ?? LoadGenerator(m.Generator, Resolve);
            if (generator is not null) disposables.Add(generator);
            GillDecisionClassifier? classifier = null;
            if (m.DecisionClassifier is { } dc)
            {
                classifier = new GillDecisionClassifier(m.DecisionKind, core.LanguageModel.Info.InputEmbeddingSize);
                disposables.Add(classifier);
                classifier.Load(Resolve(dc));
                classifier.To(core.Device);
            }
            byte[] hash = GillRetrievalIndex.ComputeModelHash(core, encoder);
            GillRetrievalIndex? gallery = null;
            if (options.LoadIndexes && m.Index is { } idx)
            {
                gallery = GillRetrievalIndex.Open(Resolve(idx), hash, options.VerifyIndexChecksum);
                disposables.Add(gallery);
            }
            GillContextMemory? memory = null;
            if (options.LoadIndexes && m.Memory is { } mem)
            {
                var memIndex = GillRetrievalIndex.Open(Resolve(mem.Index), hash, options.VerifyIndexChecksum);
                disposables.Add(memIndex);
                var captions = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(Resolve(mem.Captions)))
                    ?? throw new InvalidDataException($"Captions file '{Resolve(mem.Captions)}' is empty.");
                memory = new GillContextMemory(memIndex, captions, Resolve(mem.ImageRoot));
            }
            return new GillModel(core, tokenizer, encoder, generator, classifier, gallery, memory, ownsComponents: true);
        }
        catch
        {
            for (int i = disposables.Count - 1; i >= 0; i--) disposables[i].Dispose();
            throw;
        }
    }

    private static IVisualEncoder? LoadEncoder(GillComponentEntry? e, Func<string, string> resolve) => e?.Type switch
    {
        null => null,
        "onnx-resnet18" => OnnxVisualEncoder.ResNet18(e.Path is null ? null : resolve(e.Path)),
        "clip" => new ClipVisualEncoder(resolve(e.Path ?? throw new InvalidDataException($"{ManifestFileName}: a clip visual_encoder needs a 'path'."))),
        "world" => Gill.ML.WorldModels.WorldVisualEncoder.Load(resolve(e.Path ?? throw new InvalidDataException($"{ManifestFileName}: a world visual_encoder needs a 'path'."))),
        var t => throw new InvalidDataException($"{ManifestFileName}: unknown visual_encoder type '{t}' (known: onnx-resnet18, clip, world; pass other encoders in GillModelLoadOptions.VisualEncoder)."),
    };

    private static IImageGenerator? LoadGenerator(GillComponentEntry? e, Func<string, string> resolve) => e?.Type switch
    {
        null => null,
        "onnx-stable-diffusion" => OnnxStableDiffusion.Load(resolve(e.Path ?? throw new InvalidDataException($"{ManifestFileName}: generator needs a 'path'."))),
        "world-decoder" => Gill.ML.WorldModels.WorldImageGenerator.Load(resolve(e.Path ?? throw new InvalidDataException($"{ManifestFileName}: generator needs a 'path'."))),
        var t => throw new InvalidDataException($"{ManifestFileName}: unknown generator type '{t}' (known: onnx-stable-diffusion, world-decoder; pass other generators in GillModelLoadOptions.ImageGenerator)."),
    };
}
