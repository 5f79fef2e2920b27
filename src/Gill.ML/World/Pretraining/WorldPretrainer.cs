using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Gill.ML.Modules;
using Gill.ML.Modules.Clip;
using Gill.ML.Serialization;
using Gill.ML.Tokenization;
using Gill.ML.WorldModels;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.World.Pretraining;

/// <summary>Progress of <see cref="WorldPretrainer.Run"/>: a phase's step (with its loss) or a log message.</summary>
/// <param name="Phase">"world", "lm", "clip", "classifier" or "generator".</param>
/// <param name="Step">Steps done.</param>
/// <param name="Total">Steps of the phase (0 when unknown).</param>
/// <param name="Loss">Loss of the last step (NaN when none).</param>
/// <param name="Message">A log line (cache hit, corrupted checkpoint rebuilt, phase done), or null.</param>
public readonly record struct WorldPretrainProgress(string Phase, int Step, int Total, double Loss, string? Message = null)
{
    /// <summary>Whether <see cref="Message"/> says the phase is over (a verified cache hit, a reused world, "done in …").</summary>
    [JsonIgnore]
    public bool EndsPhase => IsPhaseEnd(Message);

    /// <summary>Whether a log line of <see cref="WorldPretrainer.Run"/> says its phase is over.</summary>
    public static bool IsPhaseEnd(string? message) =>
        message is not null && (message.StartsWith("cached", StringComparison.Ordinal) || message.StartsWith("using", StringComparison.Ordinal)
                                || message.StartsWith("done", StringComparison.Ordinal));
}

/// <summary>Figures of the contrastive phase (Recall@1 on galleries of the test and held-out splits).</summary>
public sealed record WorldClipMetrics(
    [property: JsonPropertyName("gallery")] int Gallery,
    [property: JsonPropertyName("text_to_image_r1")] double TextToImageR1,
    [property: JsonPropertyName("image_to_text_r1")] double ImageToTextR1,
    [property: JsonPropertyName("text_to_image_r1_same_attributes")] double TextToImageR1SameAttributes,
    [property: JsonPropertyName("image_to_text_r1_same_attributes")] double ImageToTextR1SameAttributes,
    [property: JsonPropertyName("heldout_gallery")] int HeldOutGallery,
    [property: JsonPropertyName("heldout_text_to_image_r1")] double HeldOutTextToImageR1,
    [property: JsonPropertyName("heldout_text_to_image_r1_same_attributes")] double HeldOutTextToImageR1SameAttributes,
    [property: JsonPropertyName("chance_r1")] double ChanceR1,
    [property: JsonPropertyName("first_loss")] double FirstLoss,
    [property: JsonPropertyName("last_loss")] double LastLoss,
    [property: JsonPropertyName("logit_scale")] double LogitScale);

/// <summary>Figures of the generator phase, scored with the attribute classifier.</summary>
public sealed record WorldGeneratorMetrics(
    [property: JsonPropertyName("test_captions")] int TestCaptions,
    [property: JsonPropertyName("test_color_and_shape")] double TestColorAndShape,
    [property: JsonPropertyName("test_color")] double TestColor,
    [property: JsonPropertyName("test_shape")] double TestShape,
    [property: JsonPropertyName("heldout_captions")] int HeldOutCaptions,
    [property: JsonPropertyName("heldout_color_and_shape")] double HeldOutColorAndShape,
    [property: JsonPropertyName("heldout_color")] double HeldOutColor,
    [property: JsonPropertyName("heldout_shape")] double HeldOutShape,
    [property: JsonPropertyName("validation_color_and_shape")] double ValidationColorAndShape,
    [property: JsonPropertyName("attempts")] int Attempts,
    [property: JsonPropertyName("first_loss")] double FirstLoss,
    [property: JsonPropertyName("last_loss")] double LastLoss,
    [property: JsonPropertyName("ms_per_image")] double MillisecondsPerImage);

/// <summary>Everything <see cref="WorldPretrainer.Run"/> measured; saved as report.json in the cache folder.</summary>
public sealed class WorldPretrainReport
{
    /// <summary>The seed.</summary>
    [JsonPropertyName("seed")] public int Seed { get; init; }
    /// <summary>The cache folder.</summary>
    [JsonPropertyName("cache_directory")] public string CacheDirectory { get; init; } = "";
    /// <summary>torch threads during the run.</summary>
    [JsonPropertyName("threads")] public int Threads { get; init; }
    /// <summary>Logical processors of the machine.</summary>
    [JsonPropertyName("processors")] public int Processors { get; init; } = Environment.ProcessorCount;
    /// <summary>/proc/loadavg at the start and end of the run (Linux), to judge timings.</summary>
    [JsonPropertyName("load_average")] public List<string> LoadAverage { get; init; } = [];
    /// <summary>Wall seconds per phase in this run (a cached phase takes its verification time).</summary>
    [JsonPropertyName("seconds")] public Dictionary<string, double> Seconds { get; init; } = [];
    /// <summary>Wall seconds each cached artefact took to train when it was built.</summary>
    [JsonPropertyName("train_seconds")] public Dictionary<string, double> TrainSeconds { get; init; } = [];
    /// <summary>Whether each phase came from the cache.</summary>
    [JsonPropertyName("cached")] public Dictionary<string, bool> Cached { get; init; } = [];
    /// <summary>Phases trained in another process (<see cref="WorldPretrainOptions.LanguageModelHost"/>), whose seconds overlap the others'.</summary>
    [JsonPropertyName("separate_process")] public List<string> SeparateProcess { get; init; } = [];
    /// <summary>Language-model figures.</summary>
    [JsonPropertyName("language_model")] public WorldLmMetrics? LanguageModel { get; set; }
    /// <summary>Contrastive figures.</summary>
    [JsonPropertyName("clip")] public WorldClipMetrics? Clip { get; set; }
    /// <summary>Attribute classifier accuracy on freshly rendered images.</summary>
    [JsonPropertyName("classifier")] public ShapesAttributeMetrics? Classifier { get; set; }
    /// <summary>Generator figures.</summary>
    [JsonPropertyName("generator")] public WorldGeneratorMetrics? Generator { get; set; }
}

/// <summary>Where <see cref="WorldPretrainer.Run"/> left everything.</summary>
public sealed class WorldPretrainResult
{
    /// <summary>The cache folder.</summary>
    public required string CacheDirectory { get; init; }
    /// <summary>The world folder (<see cref="ShapesWorldDataset.Load"/>).</summary>
    public required string WorldFolder { get; init; }
    /// <summary>Hugging Face OPT folder with GPT-2 tokenizer files (<see cref="CausalLM.Load"/>, <see cref="GillTokenizer.FromFolder"/>).</summary>
    public required string LanguageModelFolder { get; init; }
    /// <summary>Hugging Face clip_text_model folder with CLIP tokenizer files (<see cref="ClipTextEncoder.Load"/>, <see cref="ClipTokenizer.FromFolder"/>).</summary>
    public required string ClipTextFolder { get; init; }
    /// <summary>The CNN image tower (<see cref="WorldVisualEncoder.Load"/>).</summary>
    public required string ImageEncoderFolder { get; init; }
    /// <summary>The text-to-image decoder (<see cref="WorldImageGenerator.Load"/>).</summary>
    public required string GeneratorFolder { get; init; }
    /// <summary>The attribute classifier file (<see cref="ShapesAttributeClassifier.Load"/>).</summary>
    public required string ClassifierPath { get; init; }
    /// <summary>report.json.</summary>
    public required string ReportPath { get; init; }
    /// <summary>The figures.</summary>
    public required WorldPretrainReport Report { get; init; }
    /// <summary>Phases trained in this run (the others came from the cache).</summary>
    public required IReadOnlyList<string> TrainedPhases { get; init; }
    /// <summary>Log lines (cache hits, rebuilds and why).</summary>
    public required IReadOnlyList<string> Messages { get; init; }
}

/// <summary>
/// Pretrains the shapes world's own backbones, saved in the layouts the real loaders read: an OPT language model
/// (GPT-2 vocabulary), a CLIP text tower with its CNN image tower, a text-to-image decoder conditioned on the text
/// tower's hidden states, and the attribute classifier that scores generated images. Each artefact is cached with a
/// SHA-256 manifest; a corrupted or outdated one is rebuilt.
/// </summary>
public static class WorldPretrainer
{
    /// <summary>Folder names inside the cache folder.</summary>
    public const string WorldDir = "world", LmDir = "lm", ClipTextDir = "clip-text", ImageEncoderDir = "image-encoder",
        GeneratorDir = "generator", ClassifierDir = "classifier", ReportFile = "report.json";

    private static readonly JsonSerializerOptions ReportJson = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>
    /// Generates the world if missing and pretrains every backbone not already cached (the phases in
    /// <see cref="WorldPretrainOptions.Phases"/>; report.json is written when all of them run).
    /// </summary>
    /// <exception cref="ArgumentException">An option is invalid (for example a world without training images).</exception>
    /// <exception cref="IOException">The cache folder cannot be written.</exception>
    public static WorldPretrainResult Run(WorldPretrainOptions options, IProgress<WorldPretrainProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var root = Path.GetFullPath(options.CacheDirectory ?? options.DefaultCacheDirectory());
        EnsureWritable(root);
        int previousThreads = torch.get_num_threads();
        if (options.Threads > 0) torch.set_num_threads(options.Threads);
        try
        {
            return new Session(options, root, progress, cancellationToken).Execute();
        }
        finally
        {
            if (options.Threads > 0) torch.set_num_threads(previousThreads);
        }
    }

    /// <summary>Marks the progress lines of a child process (<see cref="ChildProcessHost"/>, <see cref="FormatProgressLine"/>).</summary>
    public const string ProgressLinePrefix = "gill-world-progress ";

    private static readonly JsonSerializerOptions ProgressJson = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>One progress report as a line for a parent process to read (<see cref="TryParseProgressLine"/>).</summary>
    public static string FormatProgressLine(WorldPretrainProgress progress) => ProgressLinePrefix + JsonSerializer.Serialize(progress, ProgressJson);

    /// <summary>Reads a line written by <see cref="FormatProgressLine"/>; false for any other line.</summary>
    public static bool TryParseProgressLine(string line, out WorldPretrainProgress progress)
    {
        progress = default;
        if (line is null || !line.StartsWith(ProgressLinePrefix, StringComparison.Ordinal)) return false;
        try
        {
            progress = JsonSerializer.Deserialize<WorldPretrainProgress>(line.AsSpan(ProgressLinePrefix.Length), ProgressJson);
            return progress.Phase is not null;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>
    /// A <see cref="WorldPretrainOptions.LanguageModelHost"/> that trains the language model in a child process:
    /// <paramref name="fileName"/> with <paramref name="arguments"/>, followed by <c>--options-file PATH --progress-json</c>.
    /// The child must read the options from PATH (<see cref="WorldPretrainOptions.FromJson"/>), run <see cref="Run"/> on
    /// them and print each report with <see cref="FormatProgressLine"/>; <c>gill world pretrain</c> does. Cancelling
    /// the run kills the child; a non-zero exit code fails the run with the child's last error lines.
    /// </summary>
    /// <param name="fileName">The executable (for example <c>gill</c>, or <c>dotnet</c> with the CLI's dll as the first argument).</param>
    /// <param name="arguments">Arguments before the options (for example <c>world pretrain</c>).</param>
    public static WorldLanguageModelHost ChildProcessHost(string fileName, IReadOnlyList<string> arguments)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(fileName);
        ArgumentNullException.ThrowIfNull(arguments);
        var leading = arguments.ToArray();
        return async (options, progress, cancellationToken) =>
        {
            var folder = options.CacheDirectory ?? throw new ArgumentException("The options passed to a language-model host name their cache folder.", nameof(options));
            var optionsPath = Path.Combine(folder, $".lm-options-{Guid.NewGuid():N}.json");
            AtomicFile.WriteAllText(optionsPath, options.ToJson());
            try
            {
                var start = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                foreach (var a in leading) start.ArgumentList.Add(a);
                foreach (var a in new[] { "--options-file", optionsPath, "--progress-json" }) start.ArgumentList.Add(a);
                string commandLine = fileName + " " + string.Join(' ', start.ArgumentList);
                using var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start '{commandLine}'.");
                var errors = new Queue<string>();
                process.ErrorDataReceived += (_, e) =>
                {
                    if (e.Data is null) return;
                    lock (errors)
                    {
                        errors.Enqueue(e.Data);
                        if (errors.Count > 20) errors.Dequeue();
                    }
                };
                process.BeginErrorReadLine();
                try
                {
                    while (await process.StandardOutput.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
                        if (TryParseProgressLine(line, out var p)) progress?.Report(p);
                    await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    try { process.Kill(entireProcessTree: true); }
                    catch (InvalidOperationException) { }   // already gone
                    await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                    throw;
                }
                if (process.ExitCode != 0)
                {
                    string tail;
                    lock (errors) tail = string.Join(Environment.NewLine, errors);
                    throw new InvalidOperationException($"'{commandLine}' exited with code {process.ExitCode}.{(tail.Length > 0 ? Environment.NewLine + tail : "")}");
                }
            }
            finally
            {
                File.Delete(optionsPath);
            }
        };
    }

    private static void EnsureWritable(string root)
    {
        try
        {
            Directory.CreateDirectory(root);
            var probe = Path.Combine(root, ".write-probe-" + Guid.NewGuid().ToString("N"));
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new IOException($"The world pretraining cache folder '{root}' cannot be written ({e.Message}). Choose another folder (CacheDirectory / --cache).", e);
        }
    }

    private sealed class Session(WorldPretrainOptions o, string root, IProgress<WorldPretrainProgress>? progress, CancellationToken ct)
    {
        private readonly List<string> _trained = [];
        private readonly List<string> _messages = [];
        private readonly WorldPretrainReport _report = new() { Seed = o.Seed, CacheDirectory = root, Threads = torch.get_num_threads() };
        // A language-model host reports from another thread: reports and log lines reach the caller one at a time.
        private readonly Lock _sync = new();

        private void Report(WorldPretrainProgress p)
        {
            if (progress is null) return;
            lock (_sync) progress.Report(p);
        }

        private void Log(string phase, string message)
        {
            lock (_sync)
            {
                _messages.Add($"[{phase}] {message}");
                progress?.Report(new WorldPretrainProgress(phase, 0, 0, double.NaN, message));
            }
        }

        private void FromHost(WorldPretrainProgress p)
        {
            if (p.Message is not null) Log(p.Phase, p.Message + " (separate process)");
            else Report(p);
        }

        private IProgress<(int Step, int Total, double Loss)> StepProgress(string phase) =>
            new SyncProgress<(int Step, int Total, double Loss)>(p => Report(new WorldPretrainProgress(phase, p.Step, p.Total, p.Loss)));

        private string P(string name) => Path.Combine(root, name);

        public WorldPretrainResult Execute()
        {
            _report.LoadAverage.Add(LoadAverage());
            bool Runs(WorldPretrainPhases phase) => (o.Phases & phase) != 0;
            var world = Runs(WorldPretrainPhases.World) ? Phase("world", EnsureWorld) : ExistingWorld();
            string lmKey = o.Key("lm", o.LanguageModel);
            void LanguageModel() => Cached("lm", [P(LmDir)], lmKey, () => TrainLm(world), m => _report.LanguageModel = m.Deserialize<WorldLmMetrics>(ArtefactManifest.Json));

            // The language model needs only the world: with a host, another process trains it beside the image side.
            using var hostCancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
            Task? hosted = null;
            if (Runs(WorldPretrainPhases.LanguageModel) && o.LanguageModelHost is { } host && ArtefactManifest.Check(P(LmDir), lmKey, out _) is null)
            {
                Log("lm", "training in a separate process beside the other phases");
                var hostOptions = WorldPretrainOptions.FromJson(o.ToJson());
                hostOptions.CacheDirectory = root;
                hostOptions.Phases = WorldPretrainPhases.LanguageModel;
                hostOptions.LanguageModelHost = null;
                hosted = Task.Run(() => host(hostOptions, new SyncProgress<WorldPretrainProgress>(FromHost), hostCancel.Token));
            }
            else if (Runs(WorldPretrainPhases.LanguageModel)) LanguageModel();

            try
            {
                if (Runs(WorldPretrainPhases.Clip))
                {
                    string clipKey = o.Key("clip", o.Clip);
                    Cached("clip", [P(ClipTextDir), P(ImageEncoderDir)], clipKey, () => TrainClip(world), m => _report.Clip = m.Deserialize<WorldClipMetrics>(ArtefactManifest.Json));
                }
                if (Runs(WorldPretrainPhases.Classifier))
                {
                    string classifierKey = o.Key("classifier", new { o.ClassifierTrainImages, o.ClassifierEpochs });
                    Cached("classifier", [P(ClassifierDir)], classifierKey, TrainClassifier, m => _report.Classifier = m.Deserialize<ShapesAttributeMetrics>(ArtefactManifest.Json));
                }
                if (Runs(WorldPretrainPhases.Generator))
                {
                    foreach (var (dir, phase) in new[] { (ClipTextDir, "clip"), (ClassifierDir, "classifier") })
                        if (!File.Exists(Path.Combine(P(dir), ArtefactManifest.FileName)))
                            throw new InvalidOperationException($"The generator phase needs the {phase} phase's checkpoint in '{P(dir)}'; run that phase first.");
                    string generatorKey = o.Key("generator", o.Generator, ArtefactManifest.ManifestHash(P(ClipTextDir)), ArtefactManifest.ManifestHash(P(ClassifierDir)));
                    Cached("generator", [P(GeneratorDir)], generatorKey, () => TrainGenerator(world), m => _report.Generator = m.Deserialize<WorldGeneratorMetrics>(ArtefactManifest.Json));
                }
            }
            catch
            {
                // Stop the other process too; its own error, if any, is secondary to this one.
                hostCancel.Cancel();
                try { hosted?.Wait(); }
                catch (AggregateException) { }
                throw;
            }
            if (hosted is not null)
            {
                try { hosted.GetAwaiter().GetResult(); }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    throw new InvalidOperationException($"The language model's separate training process failed: {e.Message}", e);
                }
                if (ArtefactManifest.Check(P(LmDir), lmKey, out var reason) is null)
                    throw new InvalidDataException($"The language model's separate training process left no valid checkpoint in '{P(LmDir)}' ({reason}).");
                LanguageModel();   // verifies the checkpoint and reads its figures (and the child's training seconds)
                _trained.Add("lm");
                _report.Cached["lm"] = false;
                _report.Seconds["lm"] = _report.TrainSeconds["lm"];
                _report.SeparateProcess.Add("lm");
            }
            _report.LoadAverage.Add(LoadAverage());
            var reportPath = P(ReportFile);
            // A run of some phases only (such as a language-model host's child) leaves the full report alone.
            if (o.Phases == WorldPretrainPhases.All) AtomicFile.WriteAllText(reportPath, JsonSerializer.Serialize(_report, ReportJson));
            return new WorldPretrainResult
            {
                CacheDirectory = root, WorldFolder = P(WorldDir), LanguageModelFolder = P(LmDir), ClipTextFolder = P(ClipTextDir),
                ImageEncoderFolder = P(ImageEncoderDir), GeneratorFolder = P(GeneratorDir), ClassifierPath = ClassifierFile,
                ReportPath = reportPath, Report = _report, TrainedPhases = _trained, Messages = _messages,
            };
        }

        private string ClassifierFile => Path.Combine(P(ClassifierDir), "classifier.safetensors");

        private T Phase<T>(string name, Func<T> body)
        {
            var sw = Stopwatch.StartNew();
            var r = body();
            _report.Seconds[name] = Math.Round(sw.Elapsed.TotalSeconds, 2);
            return r;
        }

        /// <summary>Uses the cached folders when every manifest checks out, else trains (the body writes the folders and returns the figures).</summary>
        private void Cached(string phase, string[] folders, string key, Func<JsonNode?> train, Action<JsonNode> useMetrics)
        {
            var sw = Stopwatch.StartNew();
            string? problem = null;
            JsonObject? first = null;
            foreach (var f in folders)
            {
                var m = ArtefactManifest.Check(f, key, out var reason);
                if (m is null) { problem = $"'{f}': {reason}"; break; }
                first ??= m;
            }
            if (problem is null && first is not null)
            {
                Log(phase, $"cached checkpoint verified (SHA-256) in '{folders[0]}'");
                _report.Cached[phase] = true;
                _report.Seconds[phase] = Math.Round(sw.Elapsed.TotalSeconds, 2);
                _report.TrainSeconds[phase] = first["train_seconds"]?.GetValue<double>() ?? double.NaN;
                if (first["metrics"] is JsonNode metrics) useMetrics(metrics);
                return;
            }
            bool existed = folders.Any(Directory.Exists);
            Log(phase, existed ? $"rebuilding: cached checkpoint {problem}" : "training (not cached)");
            foreach (var f in folders) if (Directory.Exists(f)) Directory.Delete(f, recursive: true);
            var metricsNode = train();
            double seconds = Math.Round(sw.Elapsed.TotalSeconds, 2);
            foreach (var f in folders) ArtefactManifest.Write(f, key, metricsNode, seconds);
            _trained.Add(phase);
            _report.Cached[phase] = false;
            _report.Seconds[phase] = seconds;
            _report.TrainSeconds[phase] = seconds;
            if (metricsNode is not null) useMetrics(metricsNode);
            Log(phase, $"done in {seconds:F1} s");
        }

        // ------------------------------------------------------------------ world

        private ShapesWorldDataset EnsureWorld()
        {
            var folder = P(WorldDir);
            var worldOptions = o.WorldWithSeed();
            var manifest = Path.Combine(folder, ShapesWorld.ManifestFileName);
            if (File.Exists(manifest))
            {
                try
                {
                    var existing = ShapesWorldDataset.Load(folder);
                    if (existing.Manifest.OptionsHash == worldOptions.Hash())
                    {
                        Log("world", $"using the world in '{folder}'");
                        _report.Cached["world"] = true;
                        return existing;
                    }
                    Log("world", "regenerating: the world in the cache was generated with other options");
                }
                catch (Exception e) when (e is IOException or InvalidDataException or JsonException)
                {
                    Log("world", $"regenerating: the cached world cannot be read ({e.Message})");
                }
                Directory.Delete(folder, recursive: true);
            }
            else Log("world", $"generating the world into '{folder}'");
            ShapesWorld.Generate(worldOptions, folder,
                new SyncProgress<ShapesWorldProgress>(p => Report(new WorldPretrainProgress("world", p.Completed, p.Total, double.NaN))), ct);
            _trained.Add("world");
            _report.Cached["world"] = false;
            var world = ShapesWorldDataset.Load(folder);
            if (world.Images(ShapesSplit.Train).Count == 0)
                throw new InvalidDataException($"The world in '{folder}' has no training images; pretraining needs captioned training images.");
            return world;
        }

        private ShapesWorldDataset ExistingWorld()
        {
            var folder = P(WorldDir);
            if (!File.Exists(Path.Combine(folder, ShapesWorld.ManifestFileName)))
                throw new InvalidOperationException($"The phases {o.Phases} need the world in '{folder}', which is not there; include WorldPretrainPhases.World.");
            var world = ShapesWorldDataset.Load(folder);
            if (world.Manifest.OptionsHash != o.WorldWithSeed().Hash())
                throw new InvalidOperationException($"The world in '{folder}' was generated with other options; include WorldPretrainPhases.World to regenerate it.");
            return world;
        }

        // ------------------------------------------------------------------ LM

        private JsonNode? TrainLm(ShapesWorldDataset world)
        {
            var (model, metrics) = WorldLanguageModelTrainer.Train(world, o.LanguageModel, o.Scaled(o.LanguageModel.Steps), o.Seed, StepProgress("lm"), ct);
            using (model)
            {
                var folder = P(LmDir);
                CausalLM.Save(model, folder);
                Gpt2TokenizerExport.Save(folder, addBosToken: true);
            }
            Log("lm", $"validation perplexity {metrics.ValidationPerplexity:F3} (unigram baseline {metrics.UnigramPerplexity:F2}), captions {metrics.CaptionPerplexity:F3}");
            return JsonSerializer.SerializeToNode(metrics, ArtefactManifest.Json);
        }

        // ------------------------------------------------------------------ CLIP

        private static Tensor Render(IReadOnlyList<ShapesImageExample> examples, int size) =>
            ShapesAttributeClassifier.RenderBatch(examples.Select(e => e.Scene).ToList(), size);

        private JsonNode? TrainClip(ShapesWorldDataset world)
        {
            var c = o.Clip;
            int size = world.Manifest.ImageSize;
            var textFolder = P(ClipTextDir);
            var corpus = File.ReadAllLines(world.CorpusPath(ShapesSplit.Train)).Where(l => l.Length > 0).ToList();
            ClipVocabularyBuilder.BuildAndSave(corpus, textFolder, c.MaxLength, ct);
            var tokenizer = ClipTokenizer.FromFolder(textFolder);
            var config = new ClipTextConfig
            {
                VocabSize = tokenizer.VocabularySize, HiddenSize = c.TextHiddenSize, IntermediateSize = 4 * c.TextHiddenSize, ProjectionDim = c.ProjectionDim,
                NumHiddenLayers = c.TextLayers, NumAttentionHeads = c.TextHeads, MaxPositionEmbeddings = c.MaxLength,
                PadTokenId = tokenizer.PadTokenId, BosTokenId = tokenizer.BosTokenId, EosTokenId = tokenizer.EosTokenId,
            };
            using var text = GlobalRandom.Seeded(o.Seed, () => ClipTextEncoder.Create(config, withProjection: true, seed: o.Seed));
            using var image = GlobalRandom.Seeded(o.Seed, () => new WorldImageEncoder(new WorldImageEncoderConfig
            {
                ImageSize = size, BaseChannels = c.ImageBaseChannels, HiddenSize = c.ImageHiddenSize, ProjectionDim = c.ProjectionDim,
            }));
            var train = world.Images(ShapesSplit.Train);
            using var images = Render(train, size);
            using var ids = Ids(tokenizer, train.Select(x => x.Caption).ToList(), c.MaxLength);
            var (losses, scale) = WorldClipTrainer.Train(image, text, images, ids, new WorldClipTrainingOptions
            {
                Steps = o.Scaled(c.Steps), BatchSize = c.BatchSize, LearningRate = c.LearningRate, Seed = o.Seed,
                WarmupSteps = Math.Min(30, Math.Max(1, o.Scaled(c.Steps) / 10)),
                Progress = StepProgress("clip"), CancellationToken = ct,
            });
            text.Save(textFolder);
            image.SaveFolder(P(ImageEncoderDir));

            var test = world.Images(ShapesSplit.Test).Take(c.EvaluationGallery).ToList();
            if (test.Count == 0) test = world.Images(ShapesSplit.Validation).Take(c.EvaluationGallery).ToList();
            if (test.Count == 0) test = train.Take(c.EvaluationGallery).ToList();
            var (t2i, i2t, t2iSame, i2tSame) = Recall(image, text, tokenizer, test, size, c.MaxLength);
            var heldOut = world.Images(ShapesSplit.HeldOut).Take(c.EvaluationGallery).ToList();
            var (h2i, _, h2iSame, _) = heldOut.Count > 0 ? Recall(image, text, tokenizer, heldOut, size, c.MaxLength) : (double.NaN, double.NaN, double.NaN, double.NaN);
            var metrics = new WorldClipMetrics(test.Count, t2i, i2t, t2iSame, i2tSame, heldOut.Count, h2i, h2iSame, 1.0 / test.Count,
                losses.Take(10).Average(), losses.TakeLast(10).Average(), scale);
            Log("clip", $"test R@1 text→image {t2i:F3} image→text {i2t:F3} (same attributes {t2iSame:F3} / {i2tSame:F3}) on {test.Count} pairs");
            return JsonSerializer.SerializeToNode(metrics, ArtefactManifest.Json);
        }

        internal static Tensor Ids(ClipTokenizer tokenizer, IReadOnlyList<string> captions, int maxLength) =>
            tokenizer.EncodeBatch(captions, new BatchEncodingOptions { Padding = PaddingStrategy.MaxLength, MaxLength = maxLength, Truncation = true }).InputIdsTensor();

        private static (double, double, double, double) Recall(WorldImageEncoder image, ClipTextEncoder text, ClipTokenizer tokenizer, List<ShapesImageExample> pairs, int size, int maxLength)
        {
            using var scope = torch.NewDisposeScope();
            var imgs = Render(pairs, size);
            var ids = Ids(tokenizer, pairs.Select(x => x.Caption).ToList(), maxLength);
            var ie = WorldClipTrainer.EmbedImages(image, imgs);
            var te = WorldClipTrainer.EmbedTexts(text, ids);
            var keys = pairs.Select(p => p.Scene.ToString()).ToList();
            var groupOf = keys.Distinct().Select((k, i) => (k, i)).ToDictionary(x => x.k, x => x.i);
            var groups = keys.Select(k => groupOf[k]).ToArray();
            var (t2i, i2t) = WorldClipTrainer.RecallAt1(te, ie);
            var (t2iS, i2tS) = WorldClipTrainer.RecallAt1(te, ie, groups);
            return (t2i, i2t, t2iS, i2tS);
        }

        // ------------------------------------------------------------------ classifier

        private JsonNode? TrainClassifier()
        {
            var w = o.WorldWithSeed();
            using var classifier = ShapesAttributeClassifier.Train(new ShapesAttributeClassifier.Options
            {
                ImageSize = w.ImageSize, Shapes = w.Shapes, Colors = w.Colors, Backgrounds = w.Backgrounds,
                TrainImages = o.ClassifierTrainImages, Epochs = o.ClassifierEpochs, Seed = o.Seed,
                Threads = o.Threads > 0 ? o.Threads : torch.get_num_threads(),
            }, new SyncProgress<ShapesClassifierProgress>(p => Report(new WorldPretrainProgress("classifier", p.Step, p.TotalSteps, p.Loss))), ct);
            Directory.CreateDirectory(P(ClassifierDir));
            classifier.Save(ClassifierFile);
            var metrics = classifier.EvaluateRendered(500, o.Seed + 7919, w.Backgrounds);
            Log("classifier", $"colour+shape accuracy on fresh renders {metrics.ColorAndShapeAccuracy:F3}");
            return JsonSerializer.SerializeToNode(metrics, ArtefactManifest.Json);
        }

        // ------------------------------------------------------------------ generator

        private JsonNode? TrainGenerator(ShapesWorldDataset world)
        {
            var g = o.Generator;
            int size = world.Manifest.ImageSize;
            using var text = ClipTextEncoder.Load(P(ClipTextDir));
            var tokenizer = ClipTokenizer.FromFolder(P(ClipTextDir));
            using var classifier = ShapesAttributeClassifier.Load(ClassifierFile);
            static List<ShapesImageExample> Single(IEnumerable<ShapesImageExample> xs) => xs.Where(x => x.Scene.Objects.Count == 1).ToList();
            var train = Single(world.Images(ShapesSplit.Train));
            if (train.Count == 0) throw new InvalidDataException("The world has no single-object training images to train the generator on (TwoObjectFraction is 1).");
            using var cond = WorldImageGenerator.EncodeCaptions(text, tokenizer, train.Select(x => x.Caption).ToList());
            using var images = ShapesAttributeClassifier.RenderBatch(train.Select(x => g.CanonicalLayout ? CanonicalLayout(x) : x.Scene).ToList(), size);
            var validation = Single(world.Images(ShapesSplit.Validation)).Take(Math.Min(300, g.EvaluationCaptions)).ToList();
            if (validation.Count == 0) validation = train.Take(Math.Min(300, g.EvaluationCaptions)).ToList();
            using var validationCond = WorldImageGenerator.EncodeCaptions(text, tokenizer, validation.Select(x => x.Caption).ToList());

            TextToImageDecoder? best = null;
            double bestScore = -1;
            List<double> bestLosses = [];
            int attempts = 0;
            try
            {
                for (int attempt = 0; attempt <= g.MaxRetries; attempt++)
                {
                    attempts++;
                    int seed = o.Seed + 1000 * attempt;
                    var decoder = GlobalRandom.Seeded(seed, () => new TextToImageDecoder(new TextToImageDecoderConfig
                    {
                        CondTokens = text.Config.MaxPositionEmbeddings, CondDim = text.Config.HiddenSize, ImageSize = size,
                        HiddenDim = g.HiddenDim, NumLayers = g.Layers, BaseChannels = g.BaseChannels,
                    }));
                    var losses = TextToImageDecoderTrainer.Train(decoder, cond, images, new DecoderTrainingOptions
                    {
                        Steps = o.Scaled(g.Steps), BatchSize = g.BatchSize, LearningRate = g.LearningRate, Seed = seed,
                        WarmupSteps = Math.Min(50, Math.Max(1, o.Scaled(g.Steps) / 10)),
                        Progress = StepProgress("generator"), CancellationToken = ct,
                    });
                    double score = Score(decoder, classifier, validation, validationCond).ColorAndShapeAccuracy;
                    if (score > bestScore)
                    {
                        best?.Dispose();
                        (best, bestScore, bestLosses) = (decoder, score, losses);
                    }
                    else decoder.Dispose();
                    if (g.RetryBelow <= 0 || bestScore >= g.RetryBelow) break;
                    if (attempt < g.MaxRetries)
                        Log("generator", $"validation colour+shape {score:F3} is below {g.RetryBelow:F2}: training again from another initialisation");
                }
                var folder = P(GeneratorDir);
                best!.SaveFolder(folder);
                WorldImageGenerator.WriteLink(folder, P(ClipTextDir));

                var test = Single(world.Images(ShapesSplit.Test)).Take(g.EvaluationCaptions).ToList();
                var heldOut = Single(world.Images(ShapesSplit.HeldOut)).Take(g.EvaluationCaptions).ToList();
                var sw = Stopwatch.StartNew();
                var testM = Evaluate(best, classifier, text, tokenizer, test);
                double ms = test.Count > 0 ? sw.Elapsed.TotalMilliseconds / test.Count : double.NaN;
                var heldM = Evaluate(best, classifier, text, tokenizer, heldOut);
                var metrics = new WorldGeneratorMetrics(test.Count, testM.ColorAndShapeAccuracy, testM.ColorAccuracy, testM.ShapeAccuracy,
                    heldOut.Count, heldM.ColorAndShapeAccuracy, heldM.ColorAccuracy, heldM.ShapeAccuracy, bestScore, attempts,
                    bestLosses.Take(10).Average(), bestLosses.TakeLast(10).Average(), ms);
                Log("generator", $"colour+shape right for {testM.ColorAndShapeAccuracy:P1} of test captions, {heldM.ColorAndShapeAccuracy:P1} of held-out captions");
                return JsonSerializer.SerializeToNode(metrics, ArtefactManifest.Json);
            }
            finally
            {
                best?.Dispose();
            }
        }

        private static ShapesAttributeMetrics Score(TextToImageDecoder decoder, ShapesAttributeClassifier classifier, List<ShapesImageExample> examples, Tensor cond)
        {
            using var drawn = TextToImageDecoderTrainer.Generate(decoder, cond);
            return classifier.Evaluate(examples.Select(x => x.Scene.Objects[0]).ToList(), drawn);
        }

        private static ShapesAttributeMetrics Evaluate(TextToImageDecoder decoder, ShapesAttributeClassifier classifier, ClipTextEncoder text, ClipTokenizer tokenizer, List<ShapesImageExample> examples)
        {
            if (examples.Count == 0) return new ShapesAttributeMetrics(0, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
            using var cond = WorldImageGenerator.EncodeCaptions(text, tokenizer, examples.Select(x => x.Caption).ToList());
            return Score(decoder, classifier, examples, cond);
        }

        private static string LoadAverage()
        {
            try { return File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : ""; }
            catch (IOException) { return ""; }
        }
    }

    /// <summary>A single-object example's scene with the size and position its caption leaves open set to large and
    /// centre (two-object scenes, whose "position" is a relation, are returned as they are).</summary>
    internal static ShapesScene CanonicalLayout(ShapesImageExample x)
    {
        if (x.Scene.Objects.Count != 1) return x.Scene;
        var objects = x.Scene.Objects.Select(obj => obj with
        {
            Size = x.Mentions.HasFlag(ShapesMentions.Size) ? obj.Size : ShapeSize.Large,
            Position = x.Mentions.HasFlag(ShapesMentions.Position) ? obj.Position : ShapePosition.Centre,
        }).ToList();
        return x.Scene with { Objects = objects };
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool and reorder reports).</summary>
    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
