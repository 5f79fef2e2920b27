using Gill.ML.Stages.VisualFeatures;
using System.Diagnostics;
using System.Text.Json;
using Gill.ML.Generation;
using Gill.ML.Inference;
using Gill.ML.Modules;
using Gill.ML.Retrieval;
using AtomicFile = Gill.ML.Serialization.AtomicFile;
using Gill.ML.Stages;
using Gill.ML.Stages.Joint;
using Gill.ML.Training;
using Gill.ML.World;
using Gill.ML.World.Pretraining;
using Gill.ML.WorldModels;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation.Demo;

/// <summary>
/// GILL end to end on the shapes world: pretrains (or reuses) the world's frozen backbones, trains GILL's mappings with
/// the joint trainer through the ML.NET stages, runs interleaved inference on test stories and dialogues, measures each
/// figure against its baseline and writes a self-contained HTML report plus a JSON of the figures.
/// </summary>
public static class DemoRunner
{
    /// <summary>File names in the output folder.</summary>
    public const string ReportFileName = "report.html", FiguresFileName = "figures.json", ModelFileName = "gill-model.zip";

    /// <summary>Label of the image embedder used for the similarity figure.</summary>
    public const string EmbedderLabel = "world CLIP image tower";

    /// <summary>Factor on the [IMG0] logit that forces an image at the first step (the original evaluations' setting).</summary>
    public const double ForcedImageScaleFactor = WorldGillTraining.ForcedImageScaleFactor;

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Runs the demo.</summary>
    /// <exception cref="ArgumentException">An option is invalid.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public static DemoResult Run(DemoOptions options, IProgress<DemoProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int savedThreads = torch.get_num_threads();
        if (options.Threads > 0) torch.set_num_threads(options.Threads);
        try
        {
            return new Session(options, progress, cancellationToken).Execute();
        }
        finally
        {
            if (options.Threads > 0) torch.set_num_threads(savedThreads);
        }
    }

    /// <summary>Prefix of the progress phases that <see cref="Run"/> forwards from the world pretraining
    /// ("pretraining:lm", …; <see cref="PretrainingPhases"/>).</summary>
    public const string PretrainingPrefix = "pretraining:";

    /// <summary>The world pretraining's phases, in the order they start.</summary>
    public static IReadOnlyList<string> PretrainingPhases { get; } = ["world", "lm", "clip", "classifier", "generator"];

    /// <summary>The pretraining options the demo uses for <paramref name="options"/>.</summary>
    public static WorldPretrainOptions PretrainOptions(DemoOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var p = options.Pretraining ?? (options.Quick ? WorldPretrainOptions.Quick(options.Seed) : new WorldPretrainOptions { Seed = options.Seed });
        if (options.Pretraining is null)
        {
            p.Seed = options.Seed;
            if (options.WorldImages is int n) p.World.Images = p.World.Images with { Train = n };
            if (options.ImageSize is int size) p.World.ImageSize = size;
            if (options.PretrainStepsScale is double scale) p.StepsScale = scale;
        }
        if (options.CacheDirectory is not null) p.CacheDirectory = options.CacheDirectory;
        p.LanguageModelHost ??= options.LanguageModelHost;
        return p;
    }

    internal sealed record Sample(string Kind, IReadOnlyList<(string Text, string? ImagePath)> Inputs, string GroundTruthPath,
        byte[]? Generated, string? RetrievedPath, string? RetrievedId, double RetrievedScore, string GeneratedText);

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }

    private sealed class Session(DemoOptions o, IProgress<DemoProgress>? progress, CancellationToken ct)
    {
        private readonly Dictionary<string, double> _seconds = new();
        private readonly List<double> _losses = new();
        private readonly List<double> _distillation = new();
        private readonly Dictionary<string, List<double>> _components = new()
        {
            ["captioning"] = new(), ["retrieval_text"] = new(), ["generation_text"] = new(), ["contrastive"] = new(), ["generation"] = new(),
        };

        private T Phase<T>(string name, Func<T> body)
        {
            ct.ThrowIfCancellationRequested();
            progress?.Report(new DemoProgress(name, 0, 1));
            var sw = Stopwatch.StartNew();
            var r = body();
            _seconds[name] = Math.Round(sw.Elapsed.TotalSeconds, 2);
            progress?.Report(new DemoProgress(name, 1, 1, null, $"{sw.Elapsed.TotalSeconds:F1} s"));
            return r;
        }

        public DemoResult Execute()
        {
            var machine = new Dictionary<string, string>
            {
                ["processors"] = Environment.ProcessorCount.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["torch_threads"] = torch.get_num_threads().ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["load_average"] = ReadLoadAverage(),
            };
            string outDir = Path.GetFullPath(o.OutputDirectory);
            Directory.CreateDirectory(outDir);

            // 1. Backbones.
            var pretrainOptions = PretrainOptions(o);
            var world = Phase("pretraining", () => WorldPretrainer.Run(pretrainOptions,
                new SyncProgress<WorldPretrainProgress>(p => progress?.Report(new DemoProgress(PretrainingPrefix + p.Phase, p.Step, p.Total,
                    double.IsNaN(p.Loss) ? null : p.Loss, p.Message))), ct));
            var dataset = ShapesWorldDataset.Load(world.WorldFolder);
            var train = dataset.Images(ShapesSplit.Train);
            var test = dataset.Images(ShapesSplit.Test).Take(o.EvaluationImages).ToList();
            if (train.Count < o.BatchSize) throw new InvalidOperationException($"The world has {train.Count} training images, fewer than BatchSize {o.BatchSize}.");
            if (test.Count < 5) throw new InvalidOperationException($"The world has {test.Count} test images; the evaluation needs at least 5.");

            using var encoder = WorldVisualEncoder.Load(world.ImageEncoderFolder);
            using var generator = WorldImageGenerator.Load(world.GeneratorFolder, world.ClipTextFolder);
            using var classifier = ShapesAttributeClassifier.Load(world.ClassifierPath);
            using var backbone = GillLanguageBackbone.Load(world.LanguageModelFolder, world.LanguageModelFolder, o.ImageTokens);
            var cond = generator.ConditioningShape;
            var ml = new MLContext(seed: o.Seed);

            // 2. GILL's joint training through the ML.NET stages.
            string modelPath = Path.Combine(outDir, ModelFileName);
            var model = Phase("training", () =>
            {
                var fitted = WorldGillTraining.Train(ml, backbone, encoder, cond, world.ClipTextFolder, train, WorldGillSettings.From(o),
                    Path.Combine(outDir, "work", "generation-targets"),
                    new SyncProgress<GillTrainingProgress>(p =>
                    {
                        if (p.Stage == "mapper-distillation")
                        {
                            _distillation.Add(p.Losses.Generation);
                            progress?.Report(new DemoProgress("training", (int)p.Step, (int)p.TotalSteps, p.Losses.Generation,
                                FormattableString.Invariant($"mapper distillation, generation {p.Losses.Generation:G4}")));
                            return;
                        }
                        _losses.Add(p.Losses.Total);
                        var l = p.Losses;
                        _components["captioning"].Add(l.Captioning); _components["retrieval_text"].Add(l.RetrievalText);
                        _components["generation_text"].Add(l.GenerationText); _components["contrastive"].Add(l.Contrastive);
                        _components["generation"].Add(l.Generation);
                        progress?.Report(new DemoProgress("training", (int)p.Step, o.Steps, l.Total,
                            FormattableString.Invariant($"captioning {l.Captioning:G4}, [IMG] text {l.RetrievalText:G4}/{l.GenerationText:G4}, contrastive {l.Contrastive:G4}, generation {l.Generation:G4}")));
                    }), ct);
                ml.Gill().Model.Save(fitted, ((IDataView)WorldGillTraining.Frame([], [])).Schema, modelPath);
                return fitted;
            });
            try
            {
                var gillStage = model.LastTransformer;
                var core = gillStage.Parts.Core;

                // Retrieval gallery of test images for inference.
                string galleryPath = Path.Combine(outDir, "work", "test-gallery.gidx");
                Directory.CreateDirectory(Path.GetDirectoryName(galleryPath)!);
                var galleryFiles = test.Select(x => (Id: Path.GetFileName(x.ImagePath), File: x.ImagePath)).ToList();
                var idToPath = galleryFiles.ToDictionary(x => x.Id, x => x.File);
                GillRetrievalIndexBuilder.Build(core, encoder, galleryFiles, galleryPath, cancellationToken: ct);
                using var gallery = GillRetrievalIndex.Open(galleryPath);
                using var gill = new GillModel(core, backbone.Tokenizer, encoder, generator, gallery: gallery);
                var embedder = new DelegateImageEmbedder(images => EmbedImages(encoder, images));

                // 3. Inference on stories and dialogues.
                var stories = dataset.Stories(ShapesSplit.Test).Where(s => s.Steps.Count >= 2).Take(Math.Max(o.EvaluationStories, o.Samples)).ToList();
                var dialogues = dataset.Dialogues(ShapesSplit.Test).Take(o.Samples).ToList();
                var samples = Phase("inference", () =>
                {
                    var list = new List<Sample>();
                    foreach (var s in stories.Take(o.Samples))
                    {
                        var inputs = new List<(string, string?)>();
                        for (int i = 0; i < s.Steps.Count - 1; i++) inputs.Add((s.Steps[i].Caption, s.Steps[i].ImagePath));
                        inputs.Add((s.Steps[^1].Caption, null));
                        list.Add(RunSample(gill, "story", inputs, s.Steps[^1].ImagePath, idToPath));
                    }
                    foreach (var d in dialogues)
                    {
                        list.Add(RunSample(gill, "dialogue", [(DialoguePrompt(d, backbone.Tokenizer, gill.ContextLength - o.ImageTokens - 16), null)], d.ImagePath, idToPath));
                    }
                    return list;
                });

                // 4. Figures.
                // The generation figures use single-object captions: the generator draws one object, the classifier reads one.
                var singles = dataset.Images(ShapesSplit.Test).Where(x => x.Scene.Objects.Count == 1).Take(o.EvaluationImages).ToList();
                var figures = Phase("evaluation", () => Evaluate(ml, model, gill, classifier, generator, embedder, test, singles, stories));
                IReadOnlyList<DemoFigure> encoders = o.CompareResNet18Steps > 0
                    ? Phase("encoders", () => CompareVisualEncoders(world, encoder, cond, train, test, Path.Combine(outDir, "work", "generation-targets")))
                    : [];
                var all = new DemoFigures
                {
                    RetrievalRecallAt1 = figures.R1, RetrievalRecallAt5 = figures.R5,
                    GenerationColorAccuracy = figures.Color, GenerationShapeAccuracy = figures.Shape, GenerationColorAndShapeAccuracy = figures.Both,
                    StorySimilarity = figures.Story,
                    Loss = new DemoFigure("training loss (mean of last 10% of steps)", Tail(_losses, last: true), "training loss (mean of first 10% of steps)", Tail(_losses, last: false), _losses.Count,
                        "GILL's total joint loss (captioning + [IMG] text losses + contrastive + generation L2) per optimizer step."),
                    LossCurve = _losses.ToArray(),
                    LossComponents = _components.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<double>)kv.Value.ToArray()),
                    MapperDistillationCurve = _distillation.ToArray(),
                    VisualEncoders = encoders,
                    Seconds = _seconds,
                    PretrainingCached = world.TrainedPhases.Count == 0,
                    PretrainingSeconds = new Dictionary<string, double>(world.Report.Seconds),
                    Machine = machine,
                };

                // 5. Report.
                string reportPath = Path.Combine(outDir, ReportFileName), figuresPath = Path.Combine(outDir, FiguresFileName);
                Phase("report", () =>
                {
                    var html = DemoReport.Render(all, samples, o, world.CacheDirectory, modelPath);
                    AtomicFile.Write(reportPath, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(html); });
                    AtomicFile.Write(figuresPath, s => JsonSerializer.Serialize(s, all, JsonOptions));
                    return 0;
                });
                // The report phase's own time is known only now: write the JSON again with it.
                AtomicFile.Write(figuresPath, s => JsonSerializer.Serialize(s, all, JsonOptions));
                return new DemoResult { ReportPath = reportPath, FiguresPath = figuresPath, ModelPath = modelPath, CacheDirectory = world.CacheDirectory, Figures = all };
            }
            finally
            {
                foreach (var t in model) (t as IDisposable)?.Dispose();
            }
        }

        /// <summary>
        /// GILL on the world image tower vs on ImageNet ResNet-18 features: the same short joint schedule (no distillation)
        /// on the same captions, each on a backbone of its own, scored by text→image Recall@1/@5 on the test captions.
        /// </summary>
        private IReadOnlyList<DemoFigure> CompareVisualEncoders(WorldPretrainResult world, WorldVisualEncoder worldEncoder, ConditioningShape cond,
            IReadOnlyList<ShapesImageExample> train, List<ShapesImageExample> test, string targetsCache)
        {
            var settings = WorldGillSettings.From(o) with { Steps = o.CompareResNet18Steps, MapperDistillationEpochs = 0 };
            int n = test.Count;
            (double R1, double R5) Score(IVisualEncoder encoder, string label)
            {
                var ml = new MLContext(seed: o.Seed);
                using var backbone = GillLanguageBackbone.Load(world.LanguageModelFolder, world.LanguageModelFolder, o.ImageTokens);
                var chain = WorldGillTraining.Train(ml, backbone, encoder, cond, world.ClipTextFolder, train, settings, targetsCache,
                    new SyncProgress<GillTrainingProgress>(p => progress?.Report(new DemoProgress("encoders", (int)p.Step, settings.Steps, p.Losses.Total, label))), ct);
                try
                {
                    var recall = TextToImageRecall(ml, chain, test, bootstrapResamples: 0);
                    return (recall.Recall[1], recall.Recall[5]);
                }
                finally
                {
                    foreach (var t in chain) (t as IDisposable)?.Dispose();
                }
            }
            var own = Score(worldEncoder, "world image tower");
            using var resnet = OnnxVisualEncoder.ResNet18();
            var imagenet = Score(resnet, "ResNet-18 (ImageNet)");
            string note = $"GILL trained for {settings.Steps} joint steps of {settings.BatchSize} captions (no distillation) on each visual feature stage: " +
                "the real ImageNet ResNet-18 (Microsoft.ML.DnnImageFeaturizer.ResNet18, 512 features) against the world's contrastively trained image tower (the baseline); " +
                $"text→image retrieval over the {n} test images.";
            return
            [
                new DemoFigure($"text→image Recall@1, ResNet-18 ImageNet features ({settings.Steps} steps)", imagenet.R1, "world image tower, same schedule", own.R1, n, note),
                new DemoFigure($"text→image Recall@5, ResNet-18 ImageNet features ({settings.Steps} steps)", imagenet.R5, "world image tower, same schedule", own.R5, n, note),
            ];
        }

        private Sample RunSample(GillModel gill, string kind, IReadOnlyList<(string Text, string? ImagePath)> inputs, string truth, IReadOnlyDictionary<string, string> idToPath)
        {
            ct.ThrowIfCancellationRequested();
            var prompt = ToPrompt(inputs);
            byte[]? generated = null;
            string text = "";
            using (var r = gill.Generate(prompt, Forced(GillDecisionMode.AlwaysGenerate), ct))
            {
                generated = r.Parts.OfType<GillGeneratedImageOutput>().FirstOrDefault()?.ToPng();
                text = string.Concat(r.Parts.OfType<GillTextOutput>().Select(t => t.Text));
            }
            using var ret = gill.Generate(prompt, Forced(GillDecisionMode.AlwaysRetrieve), ct);
            var hit = ret.Parts.OfType<GillRetrievedImageOutput>().FirstOrDefault(p => p.Rank == 0)
                ?? ret.Parts.OfType<GillRetrievedImageOutput>().FirstOrDefault();
            return new Sample(kind, inputs, truth, generated, hit is null ? null : idToPath.GetValueOrDefault(hit.Id), hit?.Id, hit?.Score ?? double.NaN, text);
        }

        private sealed record Figures(DemoFigure R1, DemoFigure R5, DemoFigure Color, DemoFigure Shape, DemoFigure Both, DemoFigure Story);

        /// <summary>Recall@1 and @5 of each test caption's [IMG] retrieval embedding over the test images' embeddings.</summary>
        private RecallAtKMetrics TextToImageRecall(MLContext ml, ITransformer model, List<ShapesImageExample> test, int bootstrapResamples)
        {
            var scored = model.Transform(Frame(test.Select(x => x.ImagePath), test.Select(x => x.Caption)));
            return ml.Gill().Evaluation.RecallAtK(WorldGillTraining.Column(scored, GillColumnNames.TextRetrievalEmbedding),
                WorldGillTraining.Column(scored, GillColumnNames.ImageRetrievalEmbedding), Enumerable.Range(0, test.Count).ToArray(),
                RetrievalDirection.TextToImage, new RecallAtKOptions { Ks = [1, 5], BootstrapResamples = bootstrapResamples, Seed = o.Seed });
        }

        private Figures Evaluate(MLContext ml, TransformerChain<GillTransformer> model, GillModel gill, ShapesAttributeClassifier classifier,
            WorldImageGenerator generator, IImageEmbedder embedder, List<ShapesImageExample> test, List<ShapesImageExample> singles, List<ShapesStory> stories)
        {
            int n = test.Count;
            var recall = TextToImageRecall(ml, model, test, bootstrapResamples: 200);
            int k5 = Math.Min(5, n);
            var r1 = new DemoFigure("GILL text→image Recall@1", recall.Recall[1], "chance (1/N)", 1.0 / n, n,
                $"Each test caption's [IMG] retrieval embedding ranks the {n} test images' embeddings (cosine); the caption's own image must be first.");
            var r5 = new DemoFigure("GILL text→image Recall@5", recall.Recall[5], "chance (5/N)", (double)k5 / n, n, "As Recall@1, with the caption's image among the top 5.");
            ct.ThrowIfCancellationRequested();

            int m = singles.Count;
            if (m == 0) throw new InvalidOperationException("The world has no single-object test images to score generated images on.");
            var gen = WorldGillTraining.Column(model.Transform(Frame(singles.Select(x => x.ImagePath), singles.Select(x => x.Caption))), GillColumnNames.GenerationEmbedding);
            var expected = singles.Select(x => x.Scene.Objects[0]).ToList();
            var cond = generator.ConditioningShape;
            ShapesAttributeMetrics gillAttr, textAttr;
            using (var scope = torch.NewDisposeScope())
            {
                var flat = torch.tensor(gen.SelectMany(v => v).ToArray(), new long[] { m, cond.SequenceLength, cond.EmbeddingDim });
                using var fromGill = generator.Generate(flat, null, null, ct);
                gillAttr = classifier.Evaluate(expected, Resize(fromGill.Images, classifier.ImageSize));
                using var fromText = generator.GenerateFromText(singles.Select(x => x.Caption).ToList(), ct);
                textAttr = classifier.Evaluate(expected, Resize(fromText.Images, classifier.ImageSize));
            }
            const string attrNote = "Single-object test captions drawn by the world generator (trained on single objects); a classifier trained on rendered scenes reads the object's {0}. GILL: caption → LM [IMG] states → GILLMapper → generator. Baseline: the generator's own text tower on the caption.";
            var color = new DemoFigure("GILL-generated colour accuracy", gillAttr.ColorAccuracy, "generator fed the caption", textAttr.ColorAccuracy, m, string.Format(System.Globalization.CultureInfo.InvariantCulture, attrNote, "colour"));
            var shape = new DemoFigure("GILL-generated shape accuracy", gillAttr.ShapeAccuracy, "generator fed the caption", textAttr.ShapeAccuracy, m, string.Format(System.Globalization.CultureInfo.InvariantCulture, attrNote, "shape"));
            var both = new DemoFigure("GILL-generated colour+shape accuracy", gillAttr.ColorAndShapeAccuracy, "generator fed the caption", textAttr.ColorAndShapeAccuracy, m, string.Format(System.Globalization.CultureInfo.InvariantCulture, attrNote, "colour and shape"));

            var evalStories = stories.Take(o.EvaluationStories).ToList();
            var full = new List<Tensor>();
            var last = new List<Tensor>();
            var truth = new List<Tensor>();
            try
            {
                foreach (var s in evalStories)
                {
                    ct.ThrowIfCancellationRequested();
                    var inputs = new List<(string, string?)>();
                    for (int i = 0; i < s.Steps.Count - 1; i++) inputs.Add((s.Steps[i].Caption, s.Steps[i].ImagePath));
                    inputs.Add((s.Steps[^1].Caption, null));
                    full.Add(GenerateOne(gill, ToPrompt(inputs), $"story {s.Id} (full)"));
                    last.Add(GenerateOne(gill, ToPrompt([(s.Steps[^1].Caption, null)]), $"story {s.Id} (last caption)"));
                    truth.Add(ImageTensorIO.Load(s.Steps[^1].ImagePath));
                }
                var simOptions = new ClipSimilarityOptions { BootstrapResamples = 200, Seed = o.Seed };
                var fullSim = ml.Gill().Evaluation.ClipSimilarity(embedder, full, truth, null, simOptions);
                var lastSim = ml.Gill().Evaluation.ClipSimilarity(embedder, last, truth, null, simOptions);
                var story = new DemoFigure($"story: image from the full story (cosine, {EmbedderLabel})", fullSim.Value, "image from the last caption only", lastSim.Value, evalStories.Count,
                    $"Test stories: captions and images of the earlier steps, then the last caption, [IMG] forced; the generated image is compared with the true last image by cosine of the {EmbedderLabel} embeddings.");
                return new Figures(r1, r5, color, shape, both, story);
            }
            finally
            {
                foreach (var t in full.Concat(last).Concat(truth)) t.Dispose();
            }
        }

        private Tensor GenerateOne(GillModel gill, GillPrompt prompt, string what) => WorldGillTraining.GenerateOne(gill, prompt, what, ct);
    }

    /// <summary>
    /// A dialogue as Q/A lines (informative rounds first choice) ending with a request for the picture, oldest rounds dropped
    /// until it fits <paramref name="maxTokens"/>, so the forced [IMG] group has room in the LM's context.
    /// </summary>
    internal static string DialoguePrompt(ShapesDialogue dialogue, Tokenization.GillTokenizer tokenizer, int maxTokens)
    {
        var rounds = dialogue.Rounds.Where(r => r.Informative).ToList();
        if (rounds.Count == 0) rounds = dialogue.Rounds.ToList();
        while (true)
        {
            var text = string.Join("\n", rounds.SelectMany(r => new[] { $"Q: {r.Question}", $"A: {r.Answer}" }).Append("Show me the picture."));
            if (rounds.Count <= 1 || tokenizer.Encode(text, addBos: true).Length <= maxTokens) return text;
            rounds.RemoveAt(0);
        }
    }

    private static GillGenerationOptions Forced(GillDecisionMode mode) => WorldGillTraining.Forced(mode);

    private static GillPrompt ToPrompt(IReadOnlyList<(string Text, string? ImagePath)> inputs) => WorldGillTraining.ToPrompt(inputs);

    private static DataFrame Frame(IEnumerable<string> paths, IEnumerable<string> captions) => WorldGillTraining.Frame(paths, captions);

    /// <summary>The world image tower's projected embedding of RGB images [3,H,W] in [0,1] (resized to the tower's size).</summary>
    internal static Tensor EmbedImages(WorldVisualEncoder encoder, IReadOnlyList<Tensor> images) => WorldGillTraining.EmbedImages(encoder, images);

    private static Tensor Resize(Tensor images, int size) => WorldGillTraining.Resize(images, size);

    private static double Tail(IReadOnlyList<double> values, bool last)
    {
        if (values.Count == 0) return double.NaN;
        int take = Math.Max(1, values.Count / 10);
        return (last ? values.Skip(values.Count - take) : values.Take(take)).Average();
    }

    private static string ReadLoadAverage()
    {
        try { return File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "unknown"; }
        catch (IOException) { return "unknown"; }
    }
}
