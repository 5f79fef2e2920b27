using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Gill.ML.Evaluation.Demo;
using Gill.ML.Generation;
using Gill.ML.Inference;
using Gill.ML.Modules;
using Gill.ML.Modules.Clip;
using Gill.ML.Retrieval;
using Gill.ML.Stages;
using Gill.ML.Stages.Decision;
using Gill.ML.Stages.Joint;
using Gill.ML.Tokenization;
using Gill.ML.Training;
using Gill.ML.World;
using Gill.ML.World.Pretraining;
using Gill.ML.WorldModels;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation.Paper;

/// <summary>
/// The GILL paper's experiments reproduced on the shapes world: contextual generation from stories (Table 1) and
/// dialogues (Table 2 / Fig. 8), contextual retrieval (Table 5), the mapper (Table 3) and [IMG]-count (Table 4)
/// ablations, the retrieve-or-generate decision (Table 6), FROMAGe's frozen-LM and [RET] ablations, and RA-CM3-style
/// retrieved in-context examples. GILL is trained through the same ML.NET pipeline as <c>gill demo</c> once per seed
/// and configuration; each table reports mean ± std over the seeds and is written as Markdown, JSON and a chart.
/// </summary>
public static class PaperExperiments
{
    /// <summary>Label of the similarity embedder (the world's CLIP image tower stands in for CLIP ViT-L/14).</summary>
    public const string ClipLabel = "world CLIP image tower";

    /// <summary>Label of the perceptual distance (ResNet-18 features stand in for LPIPS: the real LPIPS trunk weights are not available).</summary>
    public const string PerceptualLabel = "ResNet-18 perceptual distance (1 − cosine of ImageNet ResNet-18 features; embedded default, not LPIPS)";

    /// <summary>File names of the summary.</summary>
    public const string IndexFileName = "index.md", ResultsFileName = "results.json";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Runs the selected experiments and writes their tables.</summary>
    /// <exception cref="ArgumentException">An option is invalid or an experiment name unknown.</exception>
    /// <exception cref="DirectoryNotFoundException">The cache folder or one of its entries is missing; the message lists them.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public static PaperResult Run(PaperOptions options, IProgress<PaperProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var folders = CacheFolders.Resolve(options.CacheDirectory);
        int savedThreads = torch.get_num_threads();
        if (options.Threads > 0) torch.set_num_threads(options.Threads);
        try
        {
            using var session = new PaperSession(options, folders, progress, cancellationToken);
            return session.Execute();
        }
        finally
        {
            if (options.Threads > 0) torch.set_num_threads(savedThreads);
        }
    }

    /// <summary>The folders of a pretrained world cache (checked to exist; nothing is written there).</summary>
    internal sealed record CacheFolders(string Root, string World, string LanguageModel, string ClipText, string ImageEncoder, string Generator, string Classifier)
    {
        public static CacheFolders Resolve(string cache)
        {
            string root = Path.GetFullPath(cache);
            if (!Directory.Exists(root))
                throw new DirectoryNotFoundException($"The world cache folder '{root}' does not exist; run 'gill world pretrain' (or 'gill demo') first, or pass the folder they wrote.");
            string P(string name) => Path.Combine(root, name);
            var f = new CacheFolders(root, P(WorldPretrainer.WorldDir), P(WorldPretrainer.LmDir), P(WorldPretrainer.ClipTextDir), P(WorldPretrainer.ImageEncoderDir),
                P(WorldPretrainer.GeneratorDir), Path.Combine(P(WorldPretrainer.ClassifierDir), "classifier.safetensors"));
            var required = new (string Path, string What)[]
            {
                (Path.Combine(f.World, ShapesWorld.ManifestFileName), "the world manifest"),
                (Path.Combine(f.LanguageModel, "config.json"), "the language model"),
                (Path.Combine(f.LanguageModel, "model.safetensors"), "the language model weights"),
                (Path.Combine(f.ClipText, "config.json"), "the CLIP text tower"),
                (Path.Combine(f.ImageEncoder, "config.json"), "the image encoder"),
                (Path.Combine(f.Generator, "config.json"), "the image generator"),
                (f.Classifier, "the attribute classifier"),
            };
            var missing = required.Where(r => !File.Exists(r.Path)).Select(r => $"{Path.GetRelativePath(root, r.Path)} ({r.What})").ToList();
            if (missing.Count > 0)
                throw new DirectoryNotFoundException($"The world cache folder '{root}' lacks {string.Join(", ", missing)}; run 'gill world pretrain' into it first.");
            return f;
        }
    }

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }

    /// <summary>A trained configuration: the fitted chain and the backbone it runs on (owned when loaded for it).</summary>
    private sealed class Trained(TransformerChain<GillTransformer> chain, GillLanguageBackbone backbone, bool ownsBackbone, double seconds) : IDisposable
    {
        public TransformerChain<GillTransformer> Chain { get; } = chain;
        public GillTransformer Stage => Chain.LastTransformer;
        public GillCoreModel Core => Stage.Parts.Core;
        public GillLanguageBackbone Backbone { get; } = backbone;
        public double Seconds { get; } = seconds;

        public void Dispose()
        {
            // The feature and target stages before it are shared by every model of the run.
            Stage.Dispose();
            if (ownsBackbone) Backbone.Dispose();
        }
    }

    /// <summary>A model variant trained for one experiment's rows.</summary>
    private sealed record Variant(string Experiment, string Name, WorldGillSettings Settings);

    /// <summary>Caption-level figures of one model: Recall@k of test captions over test images; generation against the true images.</summary>
    private sealed record CaptionFigures(double R1, double R5, double R10, double Fd, double Clip, double Accuracy);

    private sealed class PaperSession : IDisposable
    {
        private readonly PaperOptions _o;
        private readonly CacheFolders _f;
        private readonly IProgress<PaperProgress>? _progress;
        private readonly CancellationToken _ct;
        private readonly string _out, _work;
        private readonly Dictionary<string, double> _seconds = new();

        // The global torch generator is shared by all threads: weight initialisation (seeded save/seed/restore), module
        // construction on load and dropout draw from it. Sections that do are run one at a time, so that results do not
        // depend on how the two training threads interleave.
        private readonly SemaphoreSlim _rngGate = new(1, 1);
        private readonly List<IDisposable> _owned = new();
        private readonly IReadOnlyList<string> _selected;
        private double _done, _totalWork;

        private readonly ShapesWorldDataset _dataset;
        private readonly WorldVisualEncoder _encoder;
        private readonly WorldImageGenerator _generator;
        private readonly ShapesAttributeClassifier _classifier;
        private readonly ResNet18Features _resnet;
        private readonly GillLanguageBackbone _backbone;
        private readonly MLContext _ml = new(seed: 0);
        private readonly List<ShapesImageExample> _train, _test;
        private readonly List<ShapesStory> _stories;
        private readonly List<ShapesDialogue> _dialogues;
        private readonly List<(string Id, string File)> _storyGallery;
        private readonly int _maxRounds;

        // Seed-independent reference features, computed on first use.
        private Features? _testTruth, _storyTruth, _dialogueTruth;

        private sealed record Features(List<float[]> Clip, List<float[]> ResNet, Tensor ResNetMatrix);

        public PaperSession(PaperOptions o, CacheFolders f, IProgress<PaperProgress>? progress, CancellationToken ct)
        {
            _o = o;
            _f = f;
            _progress = progress;
            _ct = ct;
            _selected = o.SelectedExperiments();
            _out = Path.GetFullPath(o.OutputDirectory);
            if (string.Equals(_out.TrimEnd(Path.DirectorySeparatorChar), f.Root.TrimEnd(Path.DirectorySeparatorChar), StringComparison.Ordinal)
                || _out.StartsWith(f.Root.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new ArgumentException($"The output folder '{_out}' lies inside the world cache '{f.Root}', which is never written; choose another --out.", nameof(o.OutputDirectory));
            _work = Path.Combine(_out, "work");
            Directory.CreateDirectory(_work);

            _dataset = ShapesWorldDataset.Load(f.World);
            _encoder = Own(WorldVisualEncoder.Load(f.ImageEncoder));
            _generator = Own(WorldImageGenerator.Load(f.Generator, f.ClipText));
            _classifier = Own(ShapesAttributeClassifier.Load(f.Classifier));
            _resnet = Own(ResNet18Features.Load());
            _backbone = Own(GillLanguageBackbone.Load(f.LanguageModel, f.LanguageModel, o.ImageTokens));

            _train = _dataset.Images(ShapesSplit.Train).ToList();
            _test = _dataset.Images(ShapesSplit.Test).Take(o.Images).ToList();
            _stories = _dataset.Stories(ShapesSplit.Test).Where(s => s.Steps.Count >= 2).Take(o.Stories).ToList();
            _dialogues = _dataset.Dialogues(ShapesSplit.Test).Where(d => d.Rounds.Count > 0).Take(o.DialogueCount).ToList();
            if (_train.Count < o.BatchSize) throw new InvalidOperationException($"The world in '{f.World}' has {_train.Count} training images, fewer than BatchSize {o.BatchSize}.");
            if (_test.Count < 10) throw new InvalidOperationException($"The world in '{f.World}' has {_test.Count} test images; the caption-level evaluation needs at least 10 (Recall@10).");
            if (NeedsStories && _stories.Count == 0) throw new InvalidOperationException($"The world in '{f.World}' has no test stories of two or more steps.");
            if (_selected.Contains("dialogue") && _dialogues.Count == 0) throw new InvalidOperationException($"The world in '{f.World}' has no test dialogues.");
            _storyGallery = _stories.SelectMany(s => s.Steps).Select(s => (s.ImagePath, s.ImagePath)).Distinct().ToList();
            _maxRounds = _dialogues.Count == 0 ? 0 : Math.Min(10, _dialogues.Max(d => d.Rounds.Count));
            _clipTextContext = ReadClipTextContext();
        }

        private WorldGillTraining.Prepared? _prepared;

        /// <summary>Visual features and generation targets of the training rows, computed once for every training of the run.</summary>
        private WorldGillTraining.Prepared Prepared
        {
            get
            {
                lock (_owned)
                {
                    if (_prepared is null)
                    {
                        var sw = Stopwatch.StartNew();
                        _rngGate.Wait(_ct);
                        try
                        {
                            _prepared = WorldGillTraining.Prepare(_ml, _encoder, _generator.ConditioningShape, _f.ClipText, _train,
                                Math.Min(_train.Count, Steps * _o.BatchSize), Path.Combine(_work, "generation-targets"));
                        }
                        finally
                        {
                            _rngGate.Release();
                        }
                        Time("training data (features, targets)", sw.Elapsed.TotalSeconds);
                    }
                    return _prepared;
                }
            }
        }

        private bool NeedsStories => _selected.Any(e => e is "stories" or "retrieval" or "retrieved-context");

        private T Own<T>(T d) where T : IDisposable
        {
            _owned.Add(d);
            return d;
        }

        private int Steps => _o.TrainSteps;

        private void Report(string phase, int step, int total, double? loss = null) =>
            _progress?.Report(new PaperProgress(phase, step, total, _done, _totalWork, loss));

        private void Time(string key, double seconds)
        {
            lock (_seconds) _seconds[key] = _seconds.GetValueOrDefault(key) + seconds;
        }

        private WorldGillSettings Base(int seed) => new()
        {
            Steps = Steps, BatchSize = _o.BatchSize, LearningRate = _o.LearningRate, ImageTokens = _o.ImageTokens, VisualTokens = _o.VisualTokens, Seed = seed,
        };

        private List<Variant> Variants(int seed)
        {
            var b = Base(seed);
            var list = new List<Variant>();
            if (_selected.Contains("mapper"))
            {
                list.Add(new("mapper", "Linear", b with { Mapper = GillMapperKind.Linear }));
                list.Add(new("mapper", "MLP", b with { Mapper = GillMapperKind.Mlp }));
                list.Add(new("mapper", "Encoder-only Transformer", b with { Mapper = GillMapperKind.EncoderOnlyTransformer }));
            }
            if (_selected.Contains("img-tokens"))
                foreach (int r in new[] { 1, 2, 4, 8 }.Where(r => r != _o.ImageTokens))
                    list.Add(new("img-tokens", $"r = {r}", b with { ImageTokens = r }));
            if (_selected.Contains("frozen-lm"))
            {
                list.Add(new("frozen-lm", "fine-tuned LM", b with { TrainLanguageModel = true, LanguageModelLearningRate = _o.LanguageModelLearningRate }));
                list.Add(new("frozen-lm", "single [RET] token", b with { ImageTokens = 1, GenerationLossWeight = 0 }));
            }
            return list;
        }

        public PaperResult Execute()
        {
            var total = Stopwatch.StartNew();
            string load = ReadLoadAverage();
            int seeds = _o.SeedCount;
            const double evalUnits = 25;
            int baseEvaluations = _selected.Count(e => e is "stories" or "dialogue" or "retrieval" or "decision" or "retrieved-context")
                + (_selected.Any(e => e is "mapper" or "img-tokens" or "frozen-lm") ? 1 : 0);
            _totalWork = seeds * ((1 + Variants(0).Count) * ((double)Steps + evalUnits) + baseEvaluations * evalUnits);

            var builders = new Dictionary<string, PaperTableBuilder>();
            PaperTableBuilder B(string name) => builders[name];
            InitBuilders(builders);

            // Seed-independent baselines (the world generator is deterministic; world CLIP is fixed).
            var sw = Stopwatch.StartNew();
            if (_selected.Contains("stories")) GeneratorStoryBaseline(B("stories"));
            if (_selected.Contains("dialogue")) GeneratorDialogueBaseline(B("dialogue"));
            if (_selected.Contains("retrieval")) ClipRetrievalBaseline(B("retrieval"));
            Time("baselines", sw.Elapsed.TotalSeconds);

            // Ablation variants train on a second thread (one torch thread each) while this thread trains the base model and
            // evaluates; results come back in a fixed order, so the tables do not depend on timing.
            using var variantQueue = new VariantTrainer(this, Enumerable.Range(0, seeds).SelectMany(Variants).ToList(), _o.ParallelTraining);
            for (int seed = 0; seed < seeds; seed++)
            {
                _ct.ThrowIfCancellationRequested();
                using var baseModel = Train($"seed {seed}: training GILL (r = {_o.ImageTokens}, GILLMapper)", Base(seed), _backbone, ownsBackbone: false);
                Time("training base", baseModel.Seconds);
                string seedWork = Path.Combine(_work, $"seed-{seed}");
                Directory.CreateDirectory(seedWork);
                string galleryPath = Path.Combine(seedWork, "story-gallery.gidx");
                GillRetrievalIndex? gallery = null;
                GillRetrievalIndex? memoryIndex = null;
                try
                {
                    if (NeedsStories)
                    {
                        GillRetrievalIndexBuilder.Build(baseModel.Core, _encoder, _storyGallery, galleryPath, cancellationToken: _ct);
                        gallery = GillRetrievalIndex.Open(galleryPath);
                    }
                    using var gill = new GillModel(baseModel.Core, baseModel.Backbone.Tokenizer, _encoder, _generator, gallery: gallery);
                    var memo = new Dictionary<string, (List<Tensor> Images, double R1, double R5, double R10)>();
                    try
                    {
                        if (_selected.Contains("stories")) Experiment("stories", seed, () => Stories(gill, B("stories"), memo));
                        if (_selected.Contains("dialogue")) Experiment("dialogue", seed, () => Dialogue(gill, B("dialogue")));
                        if (_selected.Contains("retrieval")) Experiment("retrieval", seed, () => Retrieval(gill, B("retrieval"), memo));
                        if (_selected.Contains("decision")) Experiment("decision", seed, () => Decision(baseModel, seed, B("decision")));
                        if (_selected.Contains("retrieved-context"))
                            Experiment("retrieved-context", seed, () =>
                            {
                                memoryIndex = BuildMemory(baseModel.Core, seedWork);
                                RetrievedContext(baseModel, gallery!, memoryIndex, B("retrieved-context"), memo);
                            });
                        if (_selected.Any(e => e is "mapper" or "img-tokens" or "frozen-lm"))
                        {
                            var figures = Experiment("caption-level (base model)", seed, () => CaptionLevel(baseModel, retrievalOnly: false));
                            AddCaptionRows(new Variant("", BaseRowName("mapper"), Base(seed)), figures, builders);
                        }
                    }
                    finally
                    {
                        foreach (var v in memo.Values) foreach (var t in v.Images) t.Dispose();
                    }
                }
                finally
                {
                    gallery?.Dispose();
                    memoryIndex?.Dispose();
                }
                EvaluateVariants(seed, variantQueue, builders);
                // Tables so far, so that an interrupted run leaves its finished seeds behind.
                if (seed + 1 < seeds) WriteAll(builders, total.Elapsed.TotalSeconds, load, seed + 1);
            }

            var (tables, files) = WriteAll(builders, total.Elapsed.TotalSeconds, load, seeds);
            string index = Path.Combine(_out, IndexFileName), results = Path.Combine(_out, ResultsFileName);
            double totalSeconds = total.Elapsed.TotalSeconds;
            Report("done", 1, 1);
            return new PaperResult { Tables = tables, IndexPath = index, ResultsPath = results, TotalSeconds = totalSeconds, Files = files };
        }

        private (List<PaperTable> Tables, List<string> Files) WriteAll(Dictionary<string, PaperTableBuilder> builders, double totalSeconds, string load, int seedsDone)
        {
            var tables = new List<PaperTable>();
            var files = new List<string>();
            foreach (var name in _selected)
            {
                var table = Finish(name, builders[name], seedsDone);
                tables.Add(table);
                files.AddRange(table.Save(_out));
            }
            string index = Path.Combine(_out, IndexFileName), results = Path.Combine(_out, ResultsFileName);
            PaperTable.WriteText(index, Index(tables, totalSeconds, load, seedsDone));
            PaperTable.WriteText(results, Results(tables, totalSeconds, load, seedsDone) + "\n");
            files.Add(index);
            files.Add(results);
            return (tables, files);
        }

        private T Experiment<T>(string name, int seed, Func<T> body)
        {
            _ct.ThrowIfCancellationRequested();
            Report($"seed {seed}: {name}", 0, 1);
            var sw = Stopwatch.StartNew();
            var r = body();
            Time(name, sw.Elapsed.TotalSeconds);
            lock (_seconds) _done += 25;
            Report($"seed {seed}: {name}", 1, 1);
            return r;
        }

        private void Experiment(string name, int seed, Action body) => Experiment(name, seed, () => { body(); return 0; });

        // ------------------------------------------------------------------ training

        private Trained Train(string phase, WorldGillSettings s, GillLanguageBackbone backbone, bool ownsBackbone)
        {
            var sw = Stopwatch.StartNew();
            var ml = new MLContext(seed: s.Seed);
            var prepared = Prepared;
            // Initialisation and the trainer's seeding happen before the first step reports.
            _rngGate.Wait(_ct);
            int released = 0;
            void Release()
            {
                if (Interlocked.Exchange(ref released, 1) == 0) _rngGate.Release();
            }
            try
            {
                var chain = WorldGillTraining.Train(ml, backbone, _encoder, _generator.ConditioningShape, prepared, s,
                    new SyncProgress<GillTrainingProgress>(p =>
                    {
                        Release();
                        lock (_seconds)
                        {
                            _done += 1;
                            Report(phase, (int)p.Step, s.Steps, p.Losses.Total);
                        }
                    }), _ct);
                return new Trained(chain, backbone, ownsBackbone, sw.Elapsed.TotalSeconds);
            }
            finally
            {
                Release();
            }
        }

        private void EvaluateVariants(int seed, VariantTrainer queue, Dictionary<string, PaperTableBuilder> builders)
        {
            foreach (var v in Variants(seed))
            {
                _ct.ThrowIfCancellationRequested();
                using var trained = queue.Next(v);
                Time(v.Experiment, trained.Seconds);
                var figures = Experiment($"{v.Experiment}: {v.Name}", seed, () => CaptionLevel(trained, retrievalOnly: v.Settings.GenerationLossWeight == 0));
                lock (_seconds)
                {
                    Time(v.Experiment, _seconds[$"{v.Experiment}: {v.Name}"]);
                    _seconds.Remove($"{v.Experiment}: {v.Name}");
                }
                AddCaptionRows(v, figures, builders);
            }
        }

        /// <summary>Trains one variant on a backbone copy of its own (its own [IMG] vocabulary; the fine-tuned LM changes only that copy).</summary>
        private Trained TrainVariant(Variant v)
        {
            GillLanguageBackbone backbone;
            _rngGate.Wait(_ct);
            try
            {
                backbone = GillLanguageBackbone.Load(_f.LanguageModel, _f.LanguageModel, v.Settings.ImageTokens);
            }
            finally
            {
                _rngGate.Release();
            }
            try
            {
                return Train($"seed {v.Settings.Seed}: training {v.Experiment} / {v.Name}", v.Settings, backbone, ownsBackbone: true);
            }
            catch
            {
                backbone.Dispose();
                throw;
            }
        }

        /// <summary>
        /// Trains the variants: a background thread takes them in order (at most <see cref="MaxAhead"/> ahead of the
        /// evaluation), and the evaluating thread, while it waits for one, trains a later one itself. Each variant's
        /// training depends only on its settings, so the tables do not depend on which thread trained what.
        /// </summary>
        private sealed class VariantTrainer : IDisposable
        {
            private const int MaxAhead = 3;
            private readonly PaperSession _s;
            private readonly List<Variant> _variants;
            private readonly int[] _claimed;
            private readonly TaskCompletionSource<Trained>[] _done;
            private readonly Thread? _thread;
            private readonly CancellationTokenSource _stop;
            private readonly object _gate = new();
            private int _next;

            public VariantTrainer(PaperSession session, List<Variant> variants, bool parallel)
            {
                _s = session;
                _variants = variants;
                _claimed = new int[variants.Count];
                _done = variants.Select(_ => new TaskCompletionSource<Trained>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
                _stop = CancellationTokenSource.CreateLinkedTokenSource(session._ct);
                if (!parallel || variants.Count == 0) return;
                _thread = new Thread(Work) { IsBackground = true, Name = "gill-paper-variants" };
                _thread.Start();
            }

            private bool Claim(int i) => Interlocked.Exchange(ref _claimed[i], 1) == 0;

            private void RunJob(int i)
            {
                try
                {
                    _stop.Token.ThrowIfCancellationRequested();
                    _done[i].SetResult(_s.TrainVariant(_variants[i]));
                }
                catch (Exception e)
                {
                    _done[i].SetException(e);
                }
            }

            private void Work()
            {
                // Thread settings of the CPU backend are per native thread.
                if (_s._o.Threads > 0) torch.set_num_threads(_s._o.Threads);
                for (int i = 0; i < _variants.Count; i++)
                {
                    lock (_gate)
                        while (i >= _next + MaxAhead && !_stop.IsCancellationRequested) Monitor.Wait(_gate, 200);
                    if (_stop.IsCancellationRequested) break;
                    if (Claim(i)) RunJob(i);
                }
            }

            /// <summary>The trained model of <paramref name="expected"/> (the next one in order); the caller disposes it.</summary>
            public Trained Next(Variant expected)
            {
                int i = _next;
                if (i >= _variants.Count || _variants[i] != expected)
                    throw new InvalidOperationException($"Variant '{expected.Name}' was requested out of order.");
                if (Claim(i)) RunJob(i);
                // While the background thread trains this one, train a later one of the same seed here.
                for (int j = i + 1; !_done[i].Task.IsCompleted && j < _variants.Count && j < i + MaxAhead
                     && _variants[j].Settings.Seed == expected.Settings.Seed; j++)
                    if (Claim(j)) RunJob(j);
                try
                {
                    _done[i].Task.Wait(_s._ct);
                }
                catch (AggregateException e) when (e.InnerExceptions.Count == 1)
                {
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
                }
                lock (_gate)
                {
                    _next = i + 1;
                    Monitor.PulseAll(_gate);
                }
                return _done[i].Task.Result;
            }

            public void Dispose()
            {
                _stop.Cancel();
                lock (_gate) Monitor.PulseAll(_gate);
                _thread?.Join();
                for (int i = _next; i < _done.Length; i++)
                    if (_done[i].Task.IsCompletedSuccessfully) _done[i].Task.Result.Dispose();
                _stop.Dispose();
            }
        }

        // ------------------------------------------------------------------ tables

        private string BaseRowName(string experiment) => experiment switch
        {
            "mapper" => "GILLMapper",
            "img-tokens" => $"r = {_o.ImageTokens}",
            _ => $"frozen LM, r = {_o.ImageTokens} [IMG] tokens (GILL)",
        };

        private void InitBuilders(Dictionary<string, PaperTableBuilder> b)
        {
            var s = new PaperTableBuilder("stories", "Table 1 analogue: contextual image generation from stories (last image)",
                "CLIP 1 cap", "CLIP 5 caps", "CLIP 5c+4i", "R18 1 cap", "R18 5 caps", "R18 5c+4i");
            b["stories"] = s;
            b["dialogue"] = new PaperTableBuilder("dialogue", "Table 2 / Fig. 8 analogue: generation from dialogues with growing context",
                "GILL CLIP", "generator CLIP", "GILL R18", "generator R18");
            b["retrieval"] = new PaperTableBuilder("retrieval", "Table 5 analogue: contextual text→image retrieval of a story's last image", "R@1", "R@5", "R@10");
            b["mapper"] = new PaperTableBuilder("mapper", "Table 3 analogue: generation mapper architectures", "FD (ResNet-18)", "CLIP sim", "colour+shape acc");
            b["img-tokens"] = new PaperTableBuilder("img-tokens", "Table 4 analogue: number of [IMG] tokens r", "R@1", "CLIP sim", "colour+shape acc");
            b["decision"] = new PaperTableBuilder("decision", "Table 6 analogue: retrieve-or-generate decision on the world's decision prompts", "F1", "precision", "recall", "accuracy");
            b["frozen-lm"] = new PaperTableBuilder("frozen-lm", "FROMAGe ablations: frozen vs fine-tuned LM; r [IMG] tokens vs a single [RET] token", "R@1", "R@5", "R@10");
            b["retrieved-context"] = new PaperTableBuilder("retrieved-context", "RA-CM3 extension: K retrieved (caption, image) examples in context", "CLIP 1 cap", "CLIP 5c+4i", "R@1 5c+4i");
        }

        private void AddCaptionRows(Variant v, CaptionFigures f, Dictionary<string, PaperTableBuilder> b)
        {
            bool isBase = v.Experiment == "";
            if (_selected.Contains("mapper") && (isBase || v.Experiment == "mapper"))
            {
                string row = isBase ? BaseRowName("mapper") : v.Name;
                b["mapper"].Add(row, "FD (ResNet-18)", f.Fd);
                b["mapper"].Add(row, "CLIP sim", f.Clip);
                b["mapper"].Add(row, "colour+shape acc", f.Accuracy);
            }
            if (_selected.Contains("img-tokens") && (isBase || v.Experiment == "img-tokens"))
            {
                string row = isBase ? BaseRowName("img-tokens") : v.Name;
                b["img-tokens"].Add(row, "R@1", f.R1);
                b["img-tokens"].Add(row, "CLIP sim", f.Clip);
                b["img-tokens"].Add(row, "colour+shape acc", f.Accuracy);
            }
            if (_selected.Contains("frozen-lm") && (isBase || v.Experiment == "frozen-lm"))
            {
                string row = isBase ? BaseRowName("frozen-lm") : v.Name == "fine-tuned LM" ? $"fine-tuned LM (lr {_o.LanguageModelLearningRate:G3}), r = {_o.ImageTokens}" : "frozen LM, single [RET] token (r = 1, retrieval losses only)";
                b["frozen-lm"].Add(row, "R@1", f.R1);
                b["frozen-lm"].Add(row, "R@5", f.R5);
                b["frozen-lm"].Add(row, "R@10", f.R10);
            }
        }

        private PaperTable Finish(string name, PaperTableBuilder b, int seedsDone)
        {
            var saved = b.Notes.ToList();
            try
            {
                return FinishCore(name, b, seedsDone);
            }
            finally
            {
                b.Notes.Clear();
                b.Notes.AddRange(saved);
            }
        }

        private PaperTable FinishCore(string name, PaperTableBuilder b, int seedsDone)
        {
            string steps = $"GILL trained {Steps} steps × batch {_o.BatchSize} (lr {_o.LearningRate:G3}, k = {_o.VisualTokens} visual tokens) per seed; mean ± sample std over {seedsDone} seed(s){(seedsDone < _o.SeedCount ? $" (partial: {seedsDone} of {_o.SeedCount} seeds done)" : "")}.";
            b.Notes.Add(steps);
            double seconds = _seconds.GetValueOrDefault(name);
            switch (name)
            {
                case "stories":
                    b.Notes.Add($"{_stories.Count} test stories; GILL generates the last step's image with [IMG] forced. Prompts: the last caption; all captions; captions interleaved with the first images (c1 i1 … c4 i4 c5 for five-step stories).");
                    b.Notes.Add($"CLIP = cosine similarity to the true last image in the {ClipLabel} embedding (the world's CLIP stands in for CLIP ViT-L/14). R18 = {PerceptualLabel}; lower is better.");
                    b.Notes.Add($"The world generator (text tower + decoder) is deterministic, so its rows are one value. Its 5-caption prompt is the captions joined by spaces, truncated to the text tower's context of {GeneratorTextContext} tokens (Stable Diffusion's is 77), so it mostly reads the first captions.");
                    return b.Build(seconds, PaperChartKind.Bars, ["CLIP 1 cap", "CLIP 5 caps", "CLIP 5c+4i"], "CLIP similarity");
                case "dialogue":
                    b.Notes.Add($"{_dialogues.Count} test dialogues (up to {_maxRounds} rounds). The prompt is the opening caption then 'Q: …' / 'A: …' lines of the first n rounds, joined by newlines; dialogues with fewer rounds give all they have.");
                    b.Notes.Add($"GILL = GILL's image for the dialogue; generator = the world generator fed the same text (deterministic: one value), truncated to its text tower's context of {GeneratorTextContext} tokens. CLIP = cosine to the dialogue's image ({ClipLabel}); R18 = {PerceptualLabel}, lower is better.");
                    b.Notes.Add($"GILL's LM has a context of {_backbone.LanguageModel.Info.MaxPositions} positions; where a dialogue does not fit with the [IMG] group, its oldest lines are dropped (dropped lines over all seeds and round counts: {_truncatedDialogues}).");
                    return b.Build(seconds, PaperChartKind.LinesByRow, ["GILL CLIP", "generator CLIP"], "CLIP similarity", "dialogue rounds");
                case "retrieval":
                    b.Notes.Add($"Queries: {_stories.Count} test stories; gallery: all {_storyGallery.Count} images of those stories, the story's own input images excluded (as FROMAGe's protocol). Chance R@1 ≈ {1.0 / Math.Max(1, _storyGallery.Count - 4):F4}.");
                    b.Notes.Add("GILL ranks by the [IMG] retrieval embedding (forced [IMG] after the prompt). World CLIP ranks by its text tower on the text (it cannot read images; the captions are joined by spaces and truncated to its context). World CLIP is deterministic: one value.");
                    return b.Build(seconds, PaperChartKind.Bars, ["R@1"], "Recall@1");
                case "mapper":
                    b.Notes.Add($"{_test.Count} test captions → GILL [IMG] states → mapper → world generator, compared with the captions' true images. FD = Fréchet distance on ResNet-18 features (embedded default, not FID; with N < 512 the covariance is rank-deficient, so only compare rows). CLIP sim = {ClipLabel} cosine. colour+shape acc = the world's attribute classifier reads the first object of the generated image.");
                    b.Notes.Add("Every variant is trained with the same steps, data and seed; only the mapper differs.");
                    return b.Build(seconds, PaperChartKind.Bars, ["CLIP sim"], "CLIP similarity");
                case "img-tokens":
                    b.Notes.Add($"R@1: each of {_test.Count} test captions ranks the {_test.Count} test images by GILL's retrieval embedding (chance {1.0 / _test.Count:F3}). CLIP sim and colour+shape acc as in the mapper table. Each r needs its own [IMG] vocabulary, so each row is a separate training.");
                    return b.Build(seconds, PaperChartKind.Bars, ["R@1", "CLIP sim"], null);
                case "decision":
                    b.Notes.Add($"Classifier: GILL's decision stage (Dropout 0.5 + Linear on the [IMG0] state) trained on the {_dataset.DecisionPrompts(ShapesSplit.Train).Count} training prompts of the base model of each seed; evaluated on the {_dataset.DecisionPrompts(ShapesSplit.Test).Count} test prompts. F1, precision and recall are macro averages over retrieve/generate.");
                    b.Notes.Add($"Max-cosine threshold: retrieve when the best cosine between the prompt's retrieval embedding and the decision gallery (single-object images of the world's '{_dataset.Manifest.Options.DecisionGallery}' split{(_o.DecisionGalleryImages is int n ? $", first {n}" : "")}) reaches a threshold chosen for F1 on the {_dataset.DecisionPrompts(ShapesSplit.Validation).Count} validation prompts. Random: a seeded fair coin.");
                    return b.Build(seconds, PaperChartKind.Bars, ["F1"], "macro F1");
                case "frozen-lm":
                    b.Notes.Add($"Recall@k of {_test.Count} test captions over their {_test.Count} images (chance R@1 {1.0 / _test.Count:F3}). The fine-tuned variant also optimises every LM parameter (AdamW, lr {_o.LanguageModelLearningRate:G3}, same schedule, no weight decay) on a fresh copy of the backbone; the [RET] variant has r = 1 and the generation loss weight 0 (FROMAGe's objective).");
                    return b.Build(seconds, PaperChartKind.Bars, ["R@1", "R@5"], null);
                case "retrieved-context":
                    b.Notes.Add($"K = 2: GILL's retrieved-context option prepends the 2 (caption, image) pairs of a memory of {Math.Min(_o.Memory, _train.Count)} training pairs nearest to the prompt's [IMG] retrieval embedding (candidates above cosine 0.9 to the query or to a chosen example are skipped), then generates/retrieves as usual. K = 0 is the plain model (the same numbers as the stories and retrieval tables).");
                    b.Notes.Add($"CLIP = {ClipLabel} cosine to the true last image; R@1 over the story gallery as in the retrieval table.");
                    return b.Build(seconds, PaperChartKind.Bars, ["CLIP 1 cap", "CLIP 5c+4i"], "CLIP similarity");
                default:
                    throw new InvalidOperationException($"Unknown experiment '{name}'.");
            }
        }

        // ------------------------------------------------------------------ shared measurements

        private Features TruthFeatures(IReadOnlyList<string> paths)
        {
            var images = paths.Select(ImageTensorIO.Load).ToList();
            try
            {
                return Measure(images);
            }
            finally
            {
                foreach (var t in images) t.Dispose();
            }
        }

        private Features Measure(IReadOnlyList<Tensor> images)
        {
            using var scope = torch.NewDisposeScope();
            var clip = new List<float[]>();
            for (int i = 0; i < images.Count; i += 64)
            {
                var emb = WorldGillTraining.EmbedImages(_encoder, images.Skip(i).Take(64).ToList());
                clip.AddRange(Rows(emb));
            }
            var res = _resnet.Embed(images);
            return new Features(clip, Rows(res), res.detach().clone().MoveToOuterDisposeScope());
        }

        private static List<float[]> Rows(Tensor m)
        {
            var c = m.to(ScalarType.Float32).cpu().contiguous();
            int n = (int)c.shape[0], d = (int)c.shape[1];
            var flat = c.data<float>().ToArray();
            return Enumerable.Range(0, n).Select(i => flat.AsSpan(i * d, d).ToArray()).ToList();
        }

        private (double Clip, double R18) Similarity(IReadOnlyList<Tensor> generated, Features truth)
        {
            var (clip, r18, _) = Similarity(generated, truth, withFrechet: false);
            return (clip, r18);
        }

        /// <summary>CLIP similarity and ResNet-18 perceptual distance of pairs, and optionally the Fréchet distance of the two sets (one ResNet-18 pass).</summary>
        private (double Clip, double R18, double Fd) Similarity(IReadOnlyList<Tensor> generated, Features truth, bool withFrechet)
        {
            var g = Measure(generated);
            try
            {
                var eval = _ml.Gill().Evaluation;
                var none = new ClipSimilarityOptions { BootstrapResamples = 0 };
                double clip = eval.ClipSimilarity(g.Clip, truth.Clip, null, none).Value;
                double r18 = eval.ResNet18PerceptualDistance(g.ResNet, truth.ResNet, null, new BootstrapOptions { BootstrapResamples = 0 }).Value;
                double fd = withFrechet ? eval.FrechetResNet18(g.ResNetMatrix, truth.ResNetMatrix, new FidOptions()).Value : double.NaN;
                return (clip, r18, fd);
            }
            finally
            {
                g.ResNetMatrix.Dispose();
            }
        }

        private Features StoryTruth => _storyTruth ??= TruthFeatures(_stories.Select(s => s.Steps[^1].ImagePath).ToList());
        private Features TestTruth => _testTruth ??= TruthFeatures(_test.Select(x => x.ImagePath).ToList());
        private Features DialogueTruth => _dialogueTruth ??= TruthFeatures(_dialogues.Select(d => d.ImagePath).ToList());

        private List<Tensor> FromText(IReadOnlyList<string> prompts)
        {
            var list = new List<Tensor>();
            for (int i = 0; i < prompts.Count; i += 64)
            {
                _ct.ThrowIfCancellationRequested();
                using var g = _generator.GenerateFromText(prompts.Skip(i).Take(64).ToList(), _ct);
                for (int j = 0; j < g.Images.shape[0]; j++) list.Add(g.Images[j].detach().clone());
            }
            return list;
        }

        private static void DisposeAll(IEnumerable<Tensor> ts)
        {
            foreach (var t in ts) t.Dispose();
        }

        /// <summary>GILL's forced-[IMG] generations (or retrievals) for prompts, in batches.</summary>
        private List<GillGenerationResult> GenerateAll(GillModel gill, IReadOnlyList<GillPrompt> prompts, GillDecisionMode mode, int contextExamples = 0)
        {
            var options = WorldGillTraining.Forced(mode, maxNewTokens: 2);
            options.RetrievalTopK = 10;
            options.ContextExamples = contextExamples;
            var results = new List<GillGenerationResult>();
            // Retrieved context is chosen per prompt; batches are only used without it.
            int batch = contextExamples > 0 ? 1 : 16;
            try
            {
                for (int i = 0; i < prompts.Count; i += batch)
                {
                    _ct.ThrowIfCancellationRequested();
                    results.AddRange(gill.GenerateBatch(prompts.Skip(i).Take(batch).ToList(), options, _ct));
                }
                return results;
            }
            catch
            {
                foreach (var r in results) r.Dispose();
                throw;
            }
        }

        private List<Tensor> GenerateImages(GillModel gill, IReadOnlyList<GillPrompt> prompts, string what, int contextExamples = 0)
        {
            var results = GenerateAll(gill, prompts, GillDecisionMode.AlwaysGenerate, contextExamples);
            var images = new List<Tensor>();
            try
            {
                for (int i = 0; i < results.Count; i++)
                {
                    var img = results[i].Parts.OfType<GillGeneratedImageOutput>().FirstOrDefault()
                        ?? throw new InvalidOperationException($"GILL produced no image for {what} prompt {i} although [IMG] was forced.");
                    images.Add(img.Image.detach().clone());
                }
                return images;
            }
            catch
            {
                DisposeAll(images);
                throw;
            }
            finally
            {
                foreach (var r in results) r.Dispose();
            }
        }

        /// <summary>Recall@1/5/10 of retrieving <paramref name="truth"/>[i] for prompt i (the prompt's own images are excluded by GillModel).</summary>
        private (double R1, double R5, double R10) RetrieveRecall(GillModel gill, IReadOnlyList<GillPrompt> prompts, IReadOnlyList<string> truth, int contextExamples = 0)
        {
            var results = GenerateAll(gill, prompts, GillDecisionMode.AlwaysRetrieve, contextExamples);
            try
            {
                var ranks = new int[prompts.Count];
                for (int i = 0; i < results.Count; i++)
                {
                    var hits = results[i].Parts.OfType<GillRetrievedImageOutput>().OrderBy(h => h.Rank).ToList();
                    if (hits.Count == 0) throw new InvalidOperationException($"GILL retrieved nothing for prompt {i} although retrieval was forced.");
                    int idx = hits.FindIndex(h => h.Id == truth[i]);
                    ranks[i] = idx < 0 ? int.MaxValue : idx + 1;
                }
                double R(int k) => ranks.Count(r => r <= k) / (double)ranks.Length;
                return (R(1), R(5), R(10));
            }
            finally
            {
                foreach (var r in results) r.Dispose();
            }
        }

        private static GillPrompt StoryPrompt(ShapesStory s, string condition) => condition switch
        {
            "1 cap" => WorldGillTraining.ToPrompt([(s.Steps[^1].Caption, null)]),
            "5 caps" => WorldGillTraining.ToPrompt(s.Steps.Select(x => (x.Caption, (string?)null)).ToList()),
            _ => WorldGillTraining.ToPrompt(s.Steps.Select((x, i) => (x.Caption, i < s.Steps.Count - 1 ? x.ImagePath : null)).ToList()),
        };

        private static string JoinedCaptions(ShapesStory s) => string.Join(" ", s.Steps.Select(x => x.Caption));

        private static string DialogueText(ShapesDialogue d, int rounds) =>
            string.Join("\n", d.Rounds.Take(rounds).SelectMany(r => new[] { $"Q: {r.Question}", $"A: {r.Answer}" }).Prepend(d.Caption));

        /// <summary>The dialogue text for GILL, oldest lines dropped until it leaves room for the [IMG] group in the LM's context.</summary>
        private string FittedDialogueText(GillModel gill, ShapesDialogue d, int rounds)
        {
            var lines = d.Rounds.Take(rounds).SelectMany(r => new[] { $"Q: {r.Question}", $"A: {r.Answer}" }).Prepend(d.Caption).ToList();
            int budget = gill.ContextLength - gill.Core.ImgTokenIds.Count - 4;
            while (true)
            {
                var text = string.Join("\n", lines);
                if (lines.Count <= 1 || gill.Tokenizer.Encode(text + " ", addBos: true).Length <= budget) return text;
                lines.RemoveAt(0);
                _truncatedDialogues++;
            }
        }

        private int _truncatedDialogues;

        private int GeneratorTextContext => _clipTextContext ??= ReadClipTextContext();
        private int? _clipTextContext;

        private int ReadClipTextContext()
        {
            using var text = ClipTextEncoder.Load(_f.ClipText);
            return text.Config.MaxPositionEmbeddings;
        }

        // ------------------------------------------------------------------ 1. stories

        private static readonly string[] StoryConditions = ["1 cap", "5 caps", "5c+4i"];

        private List<Tensor> StoryImages(GillModel gill, string condition, Dictionary<string, (List<Tensor> Images, double R1, double R5, double R10)> memo, int k = 0)
        {
            string key = $"gen|{condition}|{k}";
            if (memo.TryGetValue(key, out var hit)) return hit.Images;
            var images = GenerateImages(gill, _stories.Select(s => StoryPrompt(s, condition)).ToList(), $"story ({condition}, K = {k})", k);
            memo[key] = (images, double.NaN, double.NaN, double.NaN);
            return images;
        }

        private (double R1, double R5, double R10) StoryRecall(GillModel gill, string condition, Dictionary<string, (List<Tensor> Images, double R1, double R5, double R10)> memo, int k = 0)
        {
            string key = $"ret|{condition}|{k}";
            if (memo.TryGetValue(key, out var hit)) return (hit.R1, hit.R5, hit.R10);
            var r = RetrieveRecall(gill, _stories.Select(s => StoryPrompt(s, condition)).ToList(), _stories.Select(s => s.Steps[^1].ImagePath).ToList(), k);
            memo[key] = ([], r.R1, r.R5, r.R10);
            return r;
        }

        private void Stories(GillModel gill, PaperTableBuilder b, Dictionary<string, (List<Tensor> Images, double R1, double R5, double R10)> memo)
        {
            foreach (var c in StoryConditions)
            {
                var (clip, r18) = Similarity(StoryImages(gill, c, memo), StoryTruth);
                b.Add("GILL", "CLIP " + c, clip);
                b.Add("GILL", "R18 " + c, r18);
            }
        }

        private void GeneratorStoryBaseline(PaperTableBuilder b)
        {
            foreach (var (c, prompts) in new[] { ("1 cap", _stories.Select(s => s.Steps[^1].Caption).ToList()), ("5 caps", _stories.Select(JoinedCaptions).ToList()) })
            {
                var images = FromText(prompts);
                try
                {
                    var (clip, r18) = Similarity(images, StoryTruth);
                    b.Add("world generator (caption text)", "CLIP " + c, clip);
                    b.Add("world generator (caption text)", "R18 " + c, r18);
                }
                finally
                {
                    DisposeAll(images);
                }
            }
        }

        // ------------------------------------------------------------------ 2. dialogue

        private void Dialogue(GillModel gill, PaperTableBuilder b) => DialogueRows(b, "GILL",
            n => GenerateImages(gill, _dialogues.Select(d => WorldGillTraining.ToPrompt([(FittedDialogueText(gill, d, n), null)])).ToList(), $"dialogue ({n} rounds)"));

        private void GeneratorDialogueBaseline(PaperTableBuilder b) => DialogueRows(b, "generator",
            n => FromText(_dialogues.Select(d => DialogueText(d, n)).ToList()));

        /// <summary>One row per round count 1…max: the similarity and R18 columns of <paramref name="who"/>'s images for that many rounds.</summary>
        private void DialogueRows(PaperTableBuilder b, string who, Func<int, List<Tensor>> imagesFor)
        {
            for (int n = 1; n <= _maxRounds; n++)
            {
                var images = imagesFor(n);
                try
                {
                    var (clip, r18) = Similarity(images, DialogueTruth);
                    b.Add(RoundsLabel(n), who + " CLIP", clip);
                    b.Add(RoundsLabel(n), who + " R18", r18);
                }
                finally
                {
                    DisposeAll(images);
                }
            }
        }

        private static string RoundsLabel(int n) => n == 1 ? "1 round" : $"{n} rounds";

        // ------------------------------------------------------------------ 3. retrieval

        private void Retrieval(GillModel gill, PaperTableBuilder b, Dictionary<string, (List<Tensor> Images, double R1, double R5, double R10)> memo)
        {
            foreach (var (c, label) in new[] { ("1 cap", "GILL (last caption)"), ("5 caps", "GILL (5 captions)"), ("5c+4i", "GILL (5 captions + 4 images)") })
            {
                var (r1, r5, r10) = StoryRecall(gill, c, memo);
                b.Add(label, "R@1", r1);
                b.Add(label, "R@5", r5);
                b.Add(label, "R@10", r10);
            }
        }

        private void ClipRetrievalBaseline(PaperTableBuilder b)
        {
            using var scope = torch.NewDisposeScope();
            using var text = ClipTextEncoder.Load(_f.ClipText);
            var tokenizer = ClipTokenizer.FromFolder(_f.ClipText);
            int max = text.Config.MaxPositionEmbeddings;
            var galleryImages = _storyGallery.Select(g => ImageTensorIO.Load(g.File)).ToList();
            var imageEmb = torch.cat(Enumerable.Range(0, (galleryImages.Count + 63) / 64)
                .Select(i => WorldGillTraining.EmbedImages(_encoder, galleryImages.Skip(i * 64).Take(64).ToList())).ToArray(), 0);
            var images = Rows(torch.nn.functional.normalize(imageEmb, dim: -1));
            var index = _storyGallery.Select((g, i) => (g.Id, i)).ToDictionary(x => x.Id, x => x.i);
            var truth = _stories.Select(s => index[s.Steps[^1].ImagePath]).ToArray();
            var excluded = _stories.Select(s => s.Steps.Take(s.Steps.Count - 1).Select(x => index[x.ImagePath]).Where(i => i != index[s.Steps[^1].ImagePath]).ToArray()).ToArray();
            foreach (var (label, texts) in new[] { ("world CLIP (last caption)", _stories.Select(s => s.Steps[^1].Caption).ToList()), ("world CLIP (5 captions)", _stories.Select(JoinedCaptions).ToList()) })
            {
                var ids = tokenizer.EncodeBatch(texts, new BatchEncodingOptions { Padding = PaddingStrategy.MaxLength, MaxLength = max, Truncation = true }).InputIdsTensor();
                var q = Rows(WorldClipTrainer.EmbedTexts(text, ids));
                var ranks = new int[q.Count];
                for (int i = 0; i < q.Count; i++)
                {
                    var scores = images.Select(v => Dot(q[i], v)).ToArray();
                    foreach (var e in excluded[i]) scores[e] = float.NegativeInfinity;
                    float t = scores[truth[i]];
                    ranks[i] = 1 + scores.Count(s => s > t);
                }
                b.Add(label, "R@1", ranks.Count(r => r <= 1) / (double)ranks.Length);
                b.Add(label, "R@5", ranks.Count(r => r <= 5) / (double)ranks.Length);
                b.Add(label, "R@10", ranks.Count(r => r <= 10) / (double)ranks.Length);
            }
            DisposeAll(galleryImages);
        }

        private static float Dot(float[] a, float[] b)
        {
            float s = 0;
            for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
            return s;
        }

        // ------------------------------------------------------------------ 4, 5, 7. caption level

        private CaptionFigures CaptionLevel(Trained model, bool retrievalOnly)
        {
            var scored = model.Chain.Transform(WorldGillTraining.Frame(_test.Select(x => x.ImagePath), _test.Select(x => x.Caption)));
            var texts = WorldGillTraining.Column(scored, GillColumnNames.TextRetrievalEmbedding);
            var images = WorldGillTraining.Column(scored, GillColumnNames.ImageRetrievalEmbedding);

            var recall = _ml.Gill().Evaluation.RecallAtK(texts, images, Enumerable.Range(0, _test.Count).ToArray(), RetrievalDirection.TextToImage,
                new RecallAtKOptions { Ks = [1, 5, 10], BootstrapResamples = 0 });
            if (retrievalOnly) return new CaptionFigures(recall.Recall[1], recall.Recall[5], recall.Recall[10], double.NaN, double.NaN, double.NaN);

            var gen = WorldGillTraining.Column(scored, GillColumnNames.GenerationEmbedding);
            var cond = _generator.ConditioningShape;
            int n = _test.Count;
            var generated = new List<Tensor>();
            try
            {
                using (var flat = torch.tensor(gen.SelectMany(v => v).ToArray(), new long[] { n, model.Core.Config.NumClipTokens, cond.EmbeddingDim }))
                using (var fromGill = _generator.Generate(flat, null, null, _ct))
                    for (int i = 0; i < n; i++) generated.Add(fromGill.Images[i].detach().clone());
                var (clip, _, fd) = Similarity(generated, TestTruth, withFrechet: true);
                ShapesAttributeMetrics attr;
                using (var scope = torch.NewDisposeScope())
                    attr = _classifier.Evaluate(_test.Select(x => x.Scene.Objects[0]).ToList(), WorldGillTraining.Resize(torch.stack(generated), _classifier.ImageSize));
                return new CaptionFigures(recall.Recall[1], recall.Recall[5], recall.Recall[10], fd, clip, attr.ColorAndShapeAccuracy);
            }
            finally
            {
                DisposeAll(generated);
            }
        }

        // ------------------------------------------------------------------ 6. decision

        private float[][]? _decisionGalleryFeatures;

        private void Decision(Trained model, int seed, PaperTableBuilder b)
        {
            var train = _dataset.DecisionPrompts(ShapesSplit.Train);
            var validation = _dataset.DecisionPrompts(ShapesSplit.Validation);
            var test = _dataset.DecisionPrompts(ShapesSplit.Test);
            if (train.Count == 0 || validation.Count == 0 || test.Count == 0)
                throw new InvalidOperationException($"The decision experiment needs decision prompts in the train, validation and test splits of '{_f.World}' (found {train.Count}/{validation.Count}/{test.Count}).");
            if (train.Select(p => p.Label).Distinct().Count() < 2)
                throw new InvalidOperationException("The decision experiment needs both labels (retrieve and generate) among the training prompts.");
            var ml = new MLContext(seed: seed);
            IDataView Prompts(IReadOnlyList<ShapesDecisionPrompt> ps) => new DataFrame(
                new StringDataFrameColumn(GillColumnNames.Caption, ps.Select(p => p.Prompt)),
                new BooleanDataFrameColumn(GillColumnNames.Label, ps.Select(p => p.Label == ShapesDecision.Retrieve)));
            var imgTokens = model.Stage.ImgTokens;
            var trainHidden = imgTokens.Transform(Prompts(train));
            DecisionClassifierTransformer classifierModel;
            _rngGate.Wait(_ct);
            try
            {
                classifierModel = ml.Gill().Trainers.DecisionClassifier(model.Stage, seed: seed).Fit(trainHidden);
            }
            finally
            {
                _rngGate.Release();
            }
            var eval = _ml.Gill().Evaluation;
            var none = new BootstrapOptions { BootstrapResamples = 0 };
            string[] names = ["generate", "retrieve"];
            var labels = test.Select(p => p.Label == ShapesDecision.Retrieve ? 1 : 0).ToArray();
            void Add(string row, int[] predictions)
            {
                var m = eval.Classification(labels, predictions, names, none);
                b.Add(row, "F1", m.MacroF1);
                b.Add(row, "precision", m.MacroPrecision);
                b.Add(row, "recall", m.MacroRecall);
                b.Add(row, "accuracy", m.Accuracy);
            }
            try
            {
                var testHidden = imgTokens.Transform(Prompts(test));
                float[] probs;
                _rngGate.Wait(_ct);
                try
                {
                    probs = classifierModel.Transform(testHidden).GetColumn<float>(GillColumnNames.Probability).ToArray();
                }
                finally
                {
                    _rngGate.Release();
                }
                Add("decision classifier (GILL)", probs.Select(p => p >= 0.5f ? 1 : 0).ToArray());
            }
            finally
            {
                classifierModel.Dispose();
            }
            Add("always retrieve", labels.Select(_ => 1).ToArray());
            Add("always generate", labels.Select(_ => 0).ToArray());
            var rng = new Random(seed);
            Add("random (seeded coin)", labels.Select(_ => rng.Next(2)).ToArray());

            // Max-cosine heuristic, threshold chosen on validation prompts.
            _decisionGalleryFeatures ??= DecisionGalleryFeatures();
            double[] MaxCos(IReadOnlyList<ShapesDecisionPrompt> ps)
            {
                using var scope = torch.NewDisposeScope();
                var hidden = WorldGillTraining.Column(imgTokens.Transform(Prompts(ps)), GillColumnNames.ImgHiddenStates);
                var r = model.Core.Config.NumTokens;
                int d = hidden[0].Length / r;
                var h = torch.tensor(hidden.SelectMany(v => v).ToArray(), new long[] { ps.Count, r, d });
                using var noGrad = torch.no_grad();
                var q = model.Core.TextRetrievalEmbedding(h).to(ScalarType.Float32).cpu();
                var best = torch.full(new long[] { ps.Count }, float.NegativeInfinity);
                var g = _decisionGalleryFeatures!;
                for (int i = 0; i < g.Length; i += 1024)
                {
                    var chunk = g.Skip(i).Take(1024).ToArray();
                    var feats = torch.tensor(chunk.SelectMany(v => v).ToArray(), new long[] { chunk.Length, chunk[0].Length });
                    var img = model.Core.ImageRetrievalEmbedding(feats).to(ScalarType.Float32).cpu();
                    best = torch.maximum(best, q.matmul(img.t()).amax(1));
                }
                return best.data<float>().Select(x => (double)x).ToArray();
            }
            var valScores = MaxCos(validation);
            var valLabels = validation.Select(p => p.Label == ShapesDecision.Retrieve ? 1 : 0).ToArray();
            var sorted = valScores.Distinct().OrderBy(x => x).ToList();
            var candidates = new List<double> { double.NegativeInfinity };
            for (int i = 0; i + 1 < sorted.Count; i++) candidates.Add((sorted[i] + sorted[i + 1]) / 2);
            candidates.Add(double.PositiveInfinity);
            double bestT = 0, bestF1 = double.NegativeInfinity;
            foreach (var t in candidates)
            {
                double f1 = eval.Classification(valLabels, valScores.Select(s => s >= t ? 1 : 0).ToArray(), names, none).MacroF1;
                if (f1 > bestF1) (bestF1, bestT) = (f1, t);
            }
            Add("max-cosine threshold", MaxCos(test).Select(s => s >= bestT ? 1 : 0).ToArray());
        }

        private float[][] DecisionGalleryFeatures()
        {
            var split = _dataset.Manifest.Options.DecisionGallery;
            var gallery = _dataset.Images(split).Where(x => x.Scene.Objects.Count == 1);
            if (_o.DecisionGalleryImages is int cap) gallery = gallery.Take(cap);
            var list = gallery.ToList();
            if (list.Count == 0) throw new InvalidOperationException($"The decision gallery split '{split}' has no single-object images.");
            var rows = new List<float[]>();
            for (int i = 0; i < list.Count; i += 256)
            {
                _ct.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                var images = torch.stack(list.Skip(i).Take(256).Select(x => ImageTensorIO.Load(x.ImagePath)).ToArray());
                var (features, _) = _encoder.Encode(WorldGillTraining.Resize(images, _encoder.ImageSize));
                rows.AddRange(Rows(features));
            }
            return rows.ToArray();
        }

        // ------------------------------------------------------------------ 8. retrieved context

        private GillRetrievalIndex BuildMemory(GillCoreModel core, string seedWork)
        {
            var pairs = _train.Take(_o.Memory).ToList();
            string path = Path.Combine(seedWork, "memory.gidx");
            GillRetrievalIndexBuilder.Build(core, _encoder, pairs.Select(p => (p.ImagePath, p.ImagePath)).ToList(), path, cancellationToken: _ct);
            return GillRetrievalIndex.Open(path);
        }

        private void RetrievedContext(Trained model, GillRetrievalIndex gallery, GillRetrievalIndex memoryIndex, PaperTableBuilder b,
            Dictionary<string, (List<Tensor> Images, double R1, double R5, double R10)> memo)
        {
            var captions = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in _train.Take(_o.Memory)) captions.TryAdd(p.ImagePath, p.Caption);
            var memory = new GillContextMemory(memoryIndex, captions, _f.World);
            using var plain = new GillModel(model.Core, model.Backbone.Tokenizer, _encoder, _generator, gallery: gallery);
            using var augmented = new GillModel(model.Core, model.Backbone.Tokenizer, _encoder, _generator, gallery: gallery, contextMemory: memory);
            foreach (var (k, gill) in new[] { (0, plain), (2, augmented) })
            {
                string row = k == 0 ? "K = 0 (GILL)" : "K = 2 retrieved examples";
                foreach (var c in new[] { "1 cap", "5c+4i" })
                {
                    var images = StoryImages(gill, c, memo, k);
                    b.Add(row, "CLIP " + c, Similarity(images, StoryTruth).Clip);
                }
                b.Add(row, "R@1 5c+4i", StoryRecall(gill, "5c+4i", memo, k).R1);
            }
        }

        // ------------------------------------------------------------------ summary

        private List<KeyValuePair<string, double>> SecondsSnapshot()
        {
            lock (_seconds) return _seconds.ToList();
        }

        private string Facts(double totalSeconds, string load, int seedsDone) =>
            string.Join("\n", new[]
            {
                $"- Cache: `{_f.Root}` (read only); seeds 0–{seedsDone - 1}{(seedsDone < _o.SeedCount ? $" (partial: {seedsDone} of {_o.SeedCount})" : "")}; {Steps} training steps × batch {_o.BatchSize}, lr {_o.LearningRate:G3}, r = {_o.ImageTokens}, k = {_o.VisualTokens}{(_o.Quick ? "; quick mode" : "")}.",
                $"- {(seedsDone < _o.SeedCount ? "Wall time so far" : "Total wall time")}: {totalSeconds:F0} s ({totalSeconds / 60:F1} min) on {Environment.ProcessorCount} cores, torch threads {(_o.Threads > 0 ? _o.Threads : torch.get_num_threads())} per thread{(_o.ParallelTraining ? "; the ablation variants train on a second thread while the base model trains and is evaluated, so the seconds by part overlap" : "")}; load average at start: {load}.",
                "- Seconds by part: " + string.Join(", ", SecondsSnapshot().OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key} {kv.Value:F0}")) + ".",
                $"- Similarity: {ClipLabel} (not CLIP ViT-L/14); perceptual distance: {PerceptualLabel}. Numbers are not comparable with the paper's; compare rows.",
            });

        private string Index(IReadOnlyList<PaperTable> tables, double totalSeconds, string load, int seedsDone)
        {
            var sb = new StringBuilder();
            sb.Append("# GILL's paper experiments on the shapes world\n\n");
            sb.Append(Facts(totalSeconds, load, seedsDone)).Append("\n\n");
            foreach (var t in tables)
            {
                sb.Append(t.ToMarkdown()).Append('\n');
                sb.Append("![").Append(t.Name).Append("](").Append(t.Name).Append(".png)\n\n");
            }
            return sb.ToString();
        }

        private string Results(IReadOnlyList<PaperTable> tables, double totalSeconds, string load, int seedsDone)
        {
            var root = new JsonObject
            {
                ["total_seconds"] = Math.Round(totalSeconds, 1),
                ["cache_directory"] = _f.Root,
                ["seeds"] = _o.SeedCount,
                ["seeds_done"] = seedsDone,
                ["steps"] = Steps,
                ["batch_size"] = _o.BatchSize,
                ["learning_rate"] = _o.LearningRate,
                ["image_tokens"] = _o.ImageTokens,
                ["visual_tokens"] = _o.VisualTokens,
                ["quick"] = _o.Quick,
                ["processors"] = Environment.ProcessorCount,
                ["load_average"] = load,
                ["seconds"] = new JsonObject(SecondsSnapshot().OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)Math.Round(kv.Value, 1)))),
                ["clip_embedder"] = ClipLabel,
                ["perceptual_distance"] = PerceptualLabel,
                ["tables"] = new JsonArray(tables.Select(t => JsonNode.Parse(t.ToJson())).ToArray()),
            };
            return root.ToJsonString(Json);
        }

        private static string ReadLoadAverage()
        {
            try { return File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "unknown"; }
            catch (IOException) { return "unknown"; }
        }

        public void Dispose()
        {
            foreach (var f in new[] { _testTruth, _storyTruth, _dialogueTruth }) f?.ResNetMatrix.Dispose();
            if (_prepared?.Prefix is IEnumerable<ITransformer> prefix) foreach (var t in prefix) (t as IDisposable)?.Dispose();
            for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
            _rngGate.Dispose();
        }
    }
}
