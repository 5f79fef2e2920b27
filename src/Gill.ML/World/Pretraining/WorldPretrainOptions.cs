using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Gill.ML.World;

namespace Gill.ML.World.Pretraining;

/// <summary>Size and schedule of the world's OPT language model (pretrained text-only on the world corpus).</summary>
public sealed record WorldLmOptions
{
    /// <summary>Hidden size d.</summary>
    public int HiddenSize { get; init; } = 128;
    /// <summary>Decoder layers.</summary>
    public int Layers { get; init; } = 2;
    /// <summary>Attention heads.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Feed-forward width.</summary>
    public int FfnDim { get; init; } = 512;
    /// <summary>Tokens per training window (documents are packed, separated by the end-of-text token).</summary>
    public int Window { get; init; } = 128;
    /// <summary>Windows per step.</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>Optimizer steps (before <see cref="WorldPretrainOptions.StepsScale"/>).</summary>
    public int Steps { get; init; } = 1000;
    /// <summary>Peak learning rate (AdamW, warm-up then cosine decay to 5%).</summary>
    public double LearningRate { get; init; } = 3e-3;
}

/// <summary>Size and schedule of the world's contrastive pretraining (CNN image tower + Hugging Face CLIP text tower).</summary>
public sealed record WorldClipOptions
{
    /// <summary>Text tower width (also the width m of each conditioning token of the generator).</summary>
    public int TextHiddenSize { get; init; } = 128;
    /// <summary>Text tower layers.</summary>
    public int TextLayers { get; init; } = 2;
    /// <summary>Text tower heads.</summary>
    public int TextHeads { get; init; } = 4;
    /// <summary>Token length L of the text tower (max_position_embeddings; captions are padded to it).</summary>
    public int MaxLength { get; init; } = 20;
    /// <summary>Channels of the image tower's first stage.</summary>
    public int ImageBaseChannels { get; init; } = 16;
    /// <summary>Pooled image feature size (the feature GILL maps into the LM).</summary>
    public int ImageHiddenSize { get; init; } = 256;
    /// <summary>Shared contrastive embedding size.</summary>
    public int ProjectionDim { get; init; } = 128;
    /// <summary>Pairs per step.</summary>
    public int BatchSize { get; init; } = 256;
    /// <summary>Optimizer steps (before scaling).</summary>
    public int Steps { get; init; } = 400;
    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>Gallery size of the Recall@1 evaluation (test and held-out splits).</summary>
    public int EvaluationGallery { get; init; } = 1000;
}

/// <summary>Size and schedule of the world's text-to-image decoder.</summary>
public sealed record WorldGeneratorOptions
{
    /// <summary>Query/attention width.</summary>
    public int HiddenDim { get; init; } = 128;
    /// <summary>Decoder blocks.</summary>
    public int Layers { get; init; } = 2;
    /// <summary>Channels of the first upsampling stage.</summary>
    public int BaseChannels { get; init; } = 96;
    /// <summary>Examples per step.</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>Optimizer steps (before scaling).</summary>
    public int Steps { get; init; } = 3000;
    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; init; } = 2e-3;
    /// <summary>
    /// For a training caption that leaves the size or the position open ("a red circle"), the decoder learns to draw the
    /// object at the default size (large) and place (centre) rather than where the training image happened to put it:
    /// the image is still a faithful rendering of the caption, and the decoder, which draws one image per caption, no
    /// longer learns the blurred overlay of every position (which the attribute classifier cannot read: 0% of held-out
    /// short captions right without it). Captions that state size and position are unaffected.
    /// </summary>
    public bool CanonicalLayout { get; init; } = true;
    /// <summary>
    /// When the colour+shape accuracy on validation captions ends below this, the decoder is trained again from a new
    /// initialisation (a run of the recipe occasionally fails to learn shape); 0 disables the check.
    /// </summary>
    public double RetryBelow { get; init; } = 0.6;
    /// <summary>Most extra attempts.</summary>
    public int MaxRetries { get; init; } = 1;
    /// <summary>Captions per split scored by the attribute classifier.</summary>
    public int EvaluationCaptions { get; init; } = 500;
}

/// <summary>The phases of <see cref="WorldPretrainer.Run"/>.</summary>
[Flags]
[JsonConverter(typeof(JsonStringEnumConverter<WorldPretrainPhases>))]
public enum WorldPretrainPhases
{
    /// <summary>Nothing.</summary>
    None = 0,
    /// <summary>Generate the world.</summary>
    World = 1,
    /// <summary>The OPT language model.</summary>
    LanguageModel = 2,
    /// <summary>The CLIP text tower and CNN image tower.</summary>
    Clip = 4,
    /// <summary>The attribute classifier.</summary>
    Classifier = 8,
    /// <summary>The text-to-image decoder (needs the CLIP text tower and the classifier).</summary>
    Generator = 16,
    /// <summary>Every phase.</summary>
    All = World | LanguageModel | Clip | Classifier | Generator,
}

/// <summary>
/// Trains the language-model phase in another process while the calling process trains the image-side phases. Called
/// with the options (their <see cref="WorldPretrainOptions.CacheDirectory"/> resolved), a sink for the phase's progress,
/// and the run's cancellation; the returned task completes when the other process has left a checkpoint in the cache
/// (it is verified by its SHA-256 manifest afterwards). <see cref="WorldPretrainer.ChildProcessHost"/> builds one.
/// </summary>
public delegate Task WorldLanguageModelHost(WorldPretrainOptions options, IProgress<WorldPretrainProgress>? progress, CancellationToken cancellationToken);

/// <summary>Options of <see cref="WorldPretrainer.Run"/>.</summary>
public sealed class WorldPretrainOptions
{
    /// <summary>
    /// Cache folder holding the world and every artefact. Null: <c>~/.cache/gill/world-&lt;hash&gt;</c> (or
    /// <c>$XDG_CACHE_HOME/gill/…</c>), the hash taken over all options.
    /// </summary>
    public string? CacheDirectory { get; set; }

    /// <summary>Seed of the world and of every training run (same seed, same options: same checkpoints).</summary>
    public int Seed { get; set; }

    /// <summary>The world to generate (its <see cref="ShapesWorldOptions.Seed"/> is replaced by <see cref="Seed"/>).</summary>
    public ShapesWorldOptions World { get; set; } = new();

    /// <summary>Multiplies every phase's step count (at least one step each).</summary>
    public double StepsScale { get; set; } = 1.0;

    /// <summary>The language model.</summary>
    public WorldLmOptions LanguageModel { get; set; } = new();

    /// <summary>The CLIP-style pair of towers.</summary>
    public WorldClipOptions Clip { get; set; } = new();

    /// <summary>The text-to-image decoder.</summary>
    public WorldGeneratorOptions Generator { get; set; } = new();

    /// <summary>Images the attribute classifier trains on.</summary>
    public int ClassifierTrainImages { get; set; } = 4000;

    /// <summary>Epochs of the attribute classifier.</summary>
    public int ClassifierEpochs { get; set; } = 3;

    /// <summary>
    /// CPU threads torch uses during pretraining (restored afterwards); 0 keeps the current setting. The models are
    /// small: one thread is the robust choice on a shared machine, where OpenMP threads spend their time spinning at
    /// barriers (measured: 2 threads on a loaded 2-core machine ran the LM ~20× slower than 1).
    /// </summary>
    public int Threads { get; set; } = 1;

    /// <summary>The phases to run (default: all). A phase whose inputs are missing from the cache fails with a message
    /// naming them; report.json is written only when all phases run.</summary>
    public WorldPretrainPhases Phases { get; set; } = WorldPretrainPhases.All;

    /// <summary>
    /// Where the language model trains when it is not cached. Null (default): in this process, before the other phases.
    /// Set: in another process, started as soon as the world is ready and running alongside the CLIP → classifier →
    /// generator chain; on a machine with two or more cores the backbones are ready several minutes sooner, with the
    /// same checkpoint. (Another thread of this process would not do: TorchSharp passes scalar arguments to kernels as
    /// finalizable temporaries, and a collection triggered by one thread can free a scalar that a kernel of the other
    /// thread has not read yet.) Not part of the cache key, and not serialised.
    /// </summary>
    [JsonIgnore]
    public WorldLanguageModelHost? LanguageModelHost { get; set; }

    /// <summary>
    /// A faster, smaller preset: 4,000 training images, a quarter of the steps and no generator retry (figures are
    /// lower; for trying the pipeline out).
    /// </summary>
    public static WorldPretrainOptions Quick(int seed = 0) => new()
    {
        Seed = seed,
        World = new ShapesWorldOptions { Images = new ShapesSplitCounts(4000, 500, 500), HeldOutImages = 500, Stories = new(500, 100, 100), Dialogues = new(500, 100, 100), DecisionPrompts = new(200, 50, 100) },
        StepsScale = 0.25,
        Generator = new WorldGeneratorOptions { MaxRetries = 0 },
        ClassifierTrainImages = 2000,
    };

    internal int Scaled(int steps) => Math.Max(1, (int)Math.Round(steps * StepsScale));

    /// <summary>These options as JSON (everything but <see cref="LanguageModelHost"/>); <see cref="FromJson"/> reads them back.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, ShapesWorldOptions.Json);

    /// <summary>Reads options written by <see cref="ToJson"/>.</summary>
    /// <exception cref="InvalidDataException">The text is not valid options JSON.</exception>
    public static WorldPretrainOptions FromJson(string json)
    {
        try
        {
            return JsonSerializer.Deserialize<WorldPretrainOptions>(json, ShapesWorldOptions.Json)
                   ?? throw new InvalidDataException("The world pretraining options JSON is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"The world pretraining options JSON is not valid: {e.Message}", e);
        }
    }

    /// <summary>Checks every option.</summary>
    /// <exception cref="ArgumentException">An option is invalid; the message names it.</exception>
    public void Validate()
    {
        if (World is null) throw new ArgumentNullException(nameof(World));
        if (!(StepsScale > 0)) throw new ArgumentOutOfRangeException(nameof(StepsScale), StepsScale, "StepsScale must be positive.");
        if (Threads < 0) throw new ArgumentOutOfRangeException(nameof(Threads), Threads, "Threads must not be negative.");
        if (World.Images is null || World.Images.Train <= 0)
            throw new ArgumentException($"The world has {World.Images?.Train ?? 0} training images (World.Images.Train); pretraining needs at least one captioned training image.", nameof(World));
        WorldWithSeed().Validate();
        if (LanguageModel.HiddenSize % LanguageModel.Heads != 0) throw new ArgumentException($"LanguageModel.HiddenSize {LanguageModel.HiddenSize} is not a multiple of LanguageModel.Heads {LanguageModel.Heads}.", nameof(LanguageModel));
        if (LanguageModel.Window < 2 || LanguageModel.BatchSize < 1) throw new ArgumentException("LanguageModel.Window must be at least 2 and BatchSize at least 1.", nameof(LanguageModel));
        if (Clip.TextHiddenSize % Clip.TextHeads != 0) throw new ArgumentException($"Clip.TextHiddenSize {Clip.TextHiddenSize} is not a multiple of Clip.TextHeads {Clip.TextHeads}.", nameof(Clip));
        if (Clip.MaxLength < 4) throw new ArgumentException("Clip.MaxLength must be at least 4.", nameof(Clip));
        if (Clip.BatchSize < 2) throw new ArgumentException("Clip.BatchSize must be at least 2.", nameof(Clip));
        if (Generator.BatchSize < 1) throw new ArgumentException("Generator.BatchSize must be at least 1.", nameof(Generator));
        if (ClassifierTrainImages < 1 || ClassifierEpochs < 1) throw new ArgumentException("ClassifierTrainImages and ClassifierEpochs must be positive.", nameof(ClassifierTrainImages));
    }

    internal ShapesWorldOptions WorldWithSeed()
    {
        var json = World.ToJson();
        var copy = JsonSerializer.Deserialize<ShapesWorldOptions>(json, ShapesWorldOptions.Json)!;
        copy.Seed = Seed;
        return copy;
    }

    private static readonly JsonSerializerOptions KeyJson = new() { WriteIndented = false };

    /// <summary>SHA-256 over the world options and the options of one phase (cache keys).</summary>
    internal string Key(string phase, object? phaseOptions, params string[] dependencies)
    {
        var text = new StringBuilder();
        text.Append("v1|").Append(phase).Append('|').Append(WorldWithSeed().Hash()).Append('|').Append(Seed)
            .Append('|').Append(StepsScale.ToString("R", System.Globalization.CultureInfo.InvariantCulture))
            .Append('|').Append(phaseOptions is null ? "" : JsonSerializer.Serialize(phaseOptions, phaseOptions.GetType(), KeyJson));
        foreach (var d in dependencies) text.Append('|').Append(d);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    /// <summary>The default cache folder of these options.</summary>
    public string DefaultCacheDirectory()
    {
        var baseDir = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (string.IsNullOrWhiteSpace(baseDir))
            baseDir = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        var all = Key("all", new { LanguageModel, Clip, Generator, ClassifierTrainImages, ClassifierEpochs });
        return Path.Combine(baseDir, "gill", "world-" + all[..16]);
    }
}
