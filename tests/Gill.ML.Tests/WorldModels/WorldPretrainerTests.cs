using System.Diagnostics;
using Gill.ML.Modules;
using Microsoft.ML.Data;
using Gill.ML.Modules.Clip;
using Gill.ML.Tokenization;
using Gill.ML.World;
using Gill.ML.World.Pretraining;
using Gill.ML.WorldModels;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.WorldModels;

[TestClass]
public sealed class WorldPretrainerTests
{
    private static string? s_cache;
    private static WorldPretrainResult? s_first;
    private static double s_firstSeconds;
    private static int s_savedThreads;

    internal static WorldPretrainOptions Tiny(string cache) => new()
    {
        CacheDirectory = cache,
        Seed = 3,
        Threads = 1,
        World = new ShapesWorldOptions
        {
            Images = new ShapesSplitCounts(400, 60, 60), HeldOutImages = 60,
            Stories = new ShapesSplitCounts(30, 10, 10), Dialogues = new ShapesSplitCounts(30, 10, 10), DecisionPrompts = new ShapesSplitCounts(0, 0, 0),
        },
        LanguageModel = new WorldLmOptions { HiddenSize = 32, Layers = 1, Heads = 2, FfnDim = 64, Window = 32, BatchSize = 16, Steps = 80, LearningRate = 5e-3 },
        Clip = new WorldClipOptions
        {
            TextHiddenSize = 32, TextLayers = 1, TextHeads = 2, MaxLength = 24, ImageBaseChannels = 8, ImageHiddenSize = 32, ProjectionDim = 32,
            BatchSize = 64, Steps = 80, LearningRate = 3e-3, EvaluationGallery = 60,
        },
        Generator = new WorldGeneratorOptions { HiddenDim = 32, Layers = 1, BaseChannels = 32, BatchSize = 16, Steps = 60, LearningRate = 3e-3, RetryBelow = 0, EvaluationCaptions = 40 },
        ClassifierTrainImages = 300,
        ClassifierEpochs = 1,
    };

    [ClassInitialize]
    public static void Init(TestContext _)
    {
        s_savedThreads = torch.get_num_threads();
        torch.set_num_threads(1);
        s_cache = Path.Combine(Path.GetTempPath(), "gill-world-pretrain-" + Guid.NewGuid().ToString("N"));
        var sw = Stopwatch.StartNew();
        s_first = WorldPretrainer.Run(Tiny(s_cache));
        s_firstSeconds = sw.Elapsed.TotalSeconds;
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        torch.set_num_threads(s_savedThreads);
        if (s_cache is not null && Directory.Exists(s_cache)) Directory.Delete(s_cache, true);
    }

    [TestMethod]
    public void ColdRunTrainsEveryPhaseQuicklyAndLearns()
    {
        var r = s_first!;
        CollectionAssert.AreEquivalent(new[] { "world", "lm", "clip", "classifier", "generator" }, r.TrainedPhases.ToArray());
        Assert.IsTrue(s_firstSeconds < 60, $"tiny pretraining took {s_firstSeconds:F1} s");
        var lm = r.Report.LanguageModel!;
        Assert.IsTrue(lm.ValidationPerplexity < 0.7 * lm.UnigramPerplexity,
            $"LM perplexity {lm.ValidationPerplexity:F2} is not clearly below the unigram baseline {lm.UnigramPerplexity:F2}");
        Assert.IsTrue(lm.LastLoss < lm.FirstLoss - 1, $"LM loss {lm.FirstLoss:F2} → {lm.LastLoss:F2}");
        var clip = r.Report.Clip!;
        Assert.AreEqual(60, clip.Gallery);
        Assert.IsTrue(clip.TextToImageR1SameAttributes > clip.ChanceR1 + 0.1,
            $"text→image R@1 (same attributes) {clip.TextToImageR1SameAttributes:F3} is not above chance {clip.ChanceR1:F3} + 0.1");
        Assert.IsTrue(clip.LastLoss < clip.FirstLoss, $"CLIP loss {clip.FirstLoss:F3} → {clip.LastLoss:F3}");
        var gen = r.Report.Generator!;
        Assert.IsTrue(gen.LastLoss < 0.8 * gen.FirstLoss, $"generator loss {gen.FirstLoss:F4} → {gen.LastLoss:F4}");
        Assert.IsTrue(File.Exists(r.ReportPath));
        StringAssert.Contains(File.ReadAllText(r.ReportPath), "\"text_to_image_r1\"");
    }

    [TestMethod]
    public void EveryArtefactReloadsWithTheRealLoaders()
    {
        var r = s_first!;
        using var scope = torch.NewDisposeScope();
        using (var lm = CausalLM.Load(r.LanguageModelFolder))
        {
            Assert.AreEqual("opt", lm.Config.ModelType);
            var tok = GillTokenizer.FromFolder(r.LanguageModelFolder);
            Assert.AreEqual(50256, tok.EosTokenId);
            Assert.AreEqual(50256, tok.BosTokenId);
            Assert.AreEqual(50256, tok.PadTokenId);
            Assert.IsTrue(tok.AddBosToken);
            var caption = ShapesWorldDataset.Load(r.WorldFolder).Images(ShapesSplit.Test)[0].Caption;
            CollectionAssert.AreEqual(GillTokenizer.Gpt2().Encode(caption, addBos: false), tok.Encode(caption, addBos: false));
            var ids = torch.tensor(tok.Encode(caption).Select(i => (long)i).ToArray()).unsqueeze(0);
            using var noGrad = torch.no_grad();
            var logits = lm.Forward(new CausalLMInput { InputIds = ids }).Logits!;
            CollectionAssert.AreEqual(new long[] { 1, ids.shape[1], 50257 }, logits.shape);
        }
        using (var text = ClipTextEncoder.Load(r.ClipTextFolder))
        {
            var tok = ClipTokenizer.FromFolder(r.ClipTextFolder);
            Assert.AreEqual(text.Config.EosTokenId, tok.EosTokenId);
            Assert.AreEqual(32, text.EmbeddingSize);
        }
        using (var enc = WorldVisualEncoder.Load(r.ImageEncoderFolder))
        {
            using var bmp = new SKBitmap(new SKImageInfo(48, 48, SKColorType.Rgba8888));
            bmp.Erase(SKColors.Red);
            var v = enc.Encode([bmp, bmp], includeEmbedding: true);
            Assert.AreEqual(2, v.Count);
            Assert.AreEqual(32, v.FeatureSize);
            Assert.AreEqual(32, v.EmbeddingSize);
            Assert.IsTrue(v.Features.All(float.IsFinite));
        }
        using (var gen = WorldImageGenerator.Load(r.GeneratorFolder))
        {
            Assert.IsTrue(gen.HasTextEncoder);
            Assert.AreEqual(new Gill.ML.Generation.ConditioningShape(24, 32), gen.ConditioningShape);
            using var images = gen.GenerateFromText(["a red circle", "a large blue square at the top"]);
            CollectionAssert.AreEqual(new long[] { 2, 3, 32, 32 }, images.Images.shape);
            Assert.IsTrue(images.ToPng(0).Length > 0);
        }
        using var classifier = ShapesAttributeClassifier.Load(r.ClassifierPath);
        Assert.AreEqual(32, classifier.ImageSize);
    }

    private sealed class PathRow
    {
        public string ImagePath { get; set; } = "";
    }

    [TestMethod]
    public void WorldVisualEncoderSavesAndLoadsInsideAGillModel()
    {
        var r = s_first!;
        var ml = new Microsoft.ML.MLContext(5);
        var paths = ShapesWorldDataset.Load(r.WorldFolder).Images(ShapesSplit.Test).Take(4).Select(x => new PathRow { ImagePath = x.ImagePath }).ToArray();
        var data = ml.Data.LoadFromEnumerable(paths);
        using var encoder = WorldVisualEncoder.Load(r.ImageEncoderFolder);
        var model = ml.Gill().ExtractVisualFeatures(new Gill.ML.Stages.VisualFeatures.VisualFeatureExtractionEstimator.Options
        {
            Encoder = encoder, InputColumnName = "ImagePath", OutputColumnName = "Feat", EmbeddingColumnName = "Emb", BatchSize = 3,
        }).Fit(data);
        var zip = Path.Combine(s_cache!, "visual-model.zip");
        ml.Gill().Model.Save(model, data.Schema, zip);
        var loaded = ml.Gill().Model.Load(zip, out _);
        foreach (var col in new[] { "Feat", "Emb" })
        {
            var a = model.Transform(data).GetColumn<float[]>(col).ToArray();
            var b = loaded.Transform(data).GetColumn<float[]>(col).ToArray();
            Assert.AreEqual(4, a.Length);
            for (int i = 0; i < a.Length; i++) CollectionAssert.AreEqual(a[i], b[i], $"{col} row {i}");
        }
        (model as IDisposable)?.Dispose();
        (loaded as IDisposable)?.Dispose();
        File.Delete(zip);
    }

    [TestMethod]
    public void SecondRunIsACacheHit()
    {
        var sw = Stopwatch.StartNew();
        var again = WorldPretrainer.Run(Tiny(s_cache!));
        Assert.AreEqual(0, again.TrainedPhases.Count, "retrained: " + string.Join(", ", again.TrainedPhases));
        Assert.IsTrue(again.Report.Cached.Values.All(c => c));
        Assert.AreEqual(s_first!.Report.LanguageModel, again.Report.LanguageModel);
        Assert.AreEqual(s_first.Report.Generator, again.Report.Generator);
        Assert.IsTrue(sw.Elapsed.TotalSeconds < s_firstSeconds / 2, $"cache hit took {sw.Elapsed.TotalSeconds:F1} s vs cold {s_firstSeconds:F1} s");
    }

    [TestMethod]
    public void CorruptedCheckpointIsDetectedAndRebuilt()
    {
        var copy = s_cache + "-corrupt";
        try
        {
            CopyFolder(s_cache!, copy);
            var weights = Path.Combine(copy, WorldPretrainer.ImageEncoderDir, "model.safetensors");
            var bytes = File.ReadAllBytes(weights);
            bytes[^5] ^= 0x5A;
            File.WriteAllBytes(weights, bytes);
            var messages = new List<string>();
            var r = WorldPretrainer.Run(Tiny(copy), new ListProgress(messages));
            CollectionAssert.Contains(r.TrainedPhases.ToList(), "clip");
            // The generator depends on the CLIP text tower, so it is rebuilt too; the LM is not.
            CollectionAssert.DoesNotContain(r.TrainedPhases.ToList(), "lm");
            var line = r.Messages.Single(m => m.StartsWith("[clip] rebuilding", StringComparison.Ordinal));
            StringAssert.Contains(line, "SHA-256");
            StringAssert.Contains(line, "model.safetensors");
            Assert.IsTrue(messages.Any(m => m.Contains("SHA-256", StringComparison.Ordinal)), "the progress log did not report the mismatch");
            Assert.IsNotNull(ArtefactManifestCheck(Path.Combine(copy, WorldPretrainer.ImageEncoderDir)));
        }
        finally
        {
            if (Directory.Exists(copy)) Directory.Delete(copy, true);
        }
    }

    [TestMethod]
    [TestCategory("Heavy")]
    public void SameSeedGivesIdenticalCheckpoints()
    {
        var other = s_cache + "-again";
        try
        {
            var r = WorldPretrainer.Run(Tiny(other));
            foreach (var dir in new[] { WorldPretrainer.LmDir, WorldPretrainer.ClipTextDir, WorldPretrainer.ImageEncoderDir, WorldPretrainer.GeneratorDir, WorldPretrainer.ClassifierDir })
                {
                var a = Files(Path.Combine(s_cache!, dir));
                var b = Files(Path.Combine(other, dir));
                Assert.AreEqual(string.Join("\n", a), string.Join("\n", b), $"{dir}: files differ between two runs with the same seed");
            }
            Assert.AreEqual(s_first!.Report.Clip, r.Report.Clip);
        }
        finally
        {
            if (Directory.Exists(other)) Directory.Delete(other, true);
        }

        static string[] Files(string folder) =>
            [.. System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "gill-artefact.json")))!["files"]!.AsObject()
                .Select(kv => kv.Key + "=" + kv.Value!.GetValue<string>()).Order(StringComparer.Ordinal)];
    }

    /// <summary>The CLI build beside this test build (same configuration), started as the language model's host.</summary>
    internal static string CliDll()
    {
        var testDir = AppContext.BaseDirectory;                       // tests/Gill.ML.Tests/bin/<cfg>/net10.0/
        var tfm = new DirectoryInfo(testDir).Name;
        var cfg = new DirectoryInfo(testDir).Parent!.Name;
        var root = Path.GetFullPath(Path.Combine(testDir, "..", "..", "..", "..", ".."));
        var dll = Path.Combine(root, "src", "Gill.ML.Cli", "bin", cfg, tfm, "gill.dll");
        Assert.IsTrue(File.Exists(dll), $"The CLI build '{dll}' is missing (the test project builds it through its project reference).");
        return dll;
    }

    [TestMethod]
    public void LanguageModelTrainedInAChildProcessIsTheSameCheckpoint()
    {
        var other = s_cache + "-child";
        try
        {
            var options = Tiny(other);
            options.LanguageModelHost = WorldPretrainer.ChildProcessHost("dotnet", [CliDll(), "world", "pretrain"]);
            var reports = new List<WorldPretrainProgress>();
            var r = WorldPretrainer.Run(options, new CollectingProgress(reports));
            CollectionAssert.AreEquivalent(new[] { "world", "lm", "clip", "classifier", "generator" }, r.TrainedPhases.ToArray());
            CollectionAssert.AreEqual(new[] { "lm" }, r.Report.SeparateProcess);
            Assert.IsTrue(reports.Any(p => p.Phase == "lm" && p.Step > 0), "no training step of the child process reached the progress sink");
            Assert.IsTrue(r.Messages.Any(m => m.StartsWith("[lm] done", StringComparison.Ordinal)), string.Join("\n", r.Messages));
            Assert.IsFalse(Directory.EnumerateFiles(other, ".lm-options-*").Any(), "the options file handed to the child was left behind");
            foreach (var dir in new[] { WorldPretrainer.LmDir, WorldPretrainer.ClipTextDir, WorldPretrainer.GeneratorDir })
                Assert.AreEqual(ManifestFiles(Path.Combine(s_cache!, dir)), ManifestFiles(Path.Combine(other, dir)), $"{dir}: the child-process run differs from the in-process run");
            Assert.AreEqual(s_first!.Report.LanguageModel, r.Report.LanguageModel);
        }
        finally
        {
            if (Directory.Exists(other)) Directory.Delete(other, true);
        }
    }

    [TestMethod]
    public void AFailingChildProcessFailsTheRunWithItsMessage()
    {
        var other = s_cache + "-child-fails";
        try
        {
            var options = Tiny(other);
            // "world pretrain" without the dll: dotnet itself rejects the command line.
            options.LanguageModelHost = WorldPretrainer.ChildProcessHost("dotnet", ["no-such-gill.dll", "world", "pretrain"]);
            options.Phases = WorldPretrainPhases.World | WorldPretrainPhases.LanguageModel;
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => WorldPretrainer.Run(options));
            StringAssert.Contains(e.Message, "separate training process failed");
            StringAssert.Contains(e.Message, "exited with code");
            Assert.IsFalse(File.Exists(Path.Combine(other, WorldPretrainer.LmDir, "gill-artefact.json")));
        }
        finally
        {
            if (Directory.Exists(other)) Directory.Delete(other, true);
        }
    }

    [TestMethod]
    public void APhaseWhoseInputsAreMissingSaysWhichOnes()
    {
        var empty = Path.Combine(Path.GetTempPath(), "gill-phases-" + Guid.NewGuid().ToString("N"));
        try
        {
            var options = Tiny(empty);
            options.Phases = WorldPretrainPhases.Clip;
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => WorldPretrainer.Run(options));
            StringAssert.Contains(e.Message, "need the world");
            var copy = Tiny(empty);
            CopyFolder(Path.Combine(s_cache!, WorldPretrainer.WorldDir), Path.Combine(empty, WorldPretrainer.WorldDir));
            copy.Phases = WorldPretrainPhases.Generator;
            var g = Assert.ThrowsExactly<InvalidOperationException>(() => WorldPretrainer.Run(copy));
            StringAssert.Contains(g.Message, "clip phase's checkpoint");
            Assert.IsFalse(File.Exists(Path.Combine(empty, WorldPretrainer.ReportFile)), "a partial run wrote report.json");
        }
        finally
        {
            if (Directory.Exists(empty)) Directory.Delete(empty, true);
        }
    }

    [TestMethod]
    public void OptionsRoundTripThroughJsonWithTheSameCacheKeys()
    {
        var options = Tiny("/tmp/somewhere");
        options.Phases = WorldPretrainPhases.LanguageModel;
        var back = WorldPretrainOptions.FromJson(options.ToJson());
        Assert.AreEqual(options.DefaultCacheDirectory(), back.DefaultCacheDirectory());
        Assert.AreEqual(options.Key("lm", options.LanguageModel), back.Key("lm", back.LanguageModel));
        Assert.AreEqual(options.Key("generator", options.Generator), back.Key("generator", back.Generator));
        Assert.AreEqual(WorldPretrainPhases.LanguageModel, back.Phases);
        Assert.AreEqual("/tmp/somewhere", back.CacheDirectory);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => WorldPretrainOptions.FromJson("{ not json"));
        StringAssert.Contains(e.Message, "not valid");
    }

    [TestMethod]
    public void ProgressLinesRoundTrip()
    {
        var p = new WorldPretrainProgress("lm", 3, 10, 1.5, null);
        Assert.IsTrue(WorldPretrainer.TryParseProgressLine(WorldPretrainer.FormatProgressLine(p), out var back));
        Assert.AreEqual(p, back);
        var q = new WorldPretrainProgress("lm", 0, 0, double.NaN, "done in 1.0 s");
        Assert.IsTrue(WorldPretrainer.TryParseProgressLine(WorldPretrainer.FormatProgressLine(q), out var qBack));
        Assert.AreEqual(q.Message, qBack.Message);
        Assert.IsTrue(double.IsNaN(qBack.Loss));
        Assert.IsFalse(WorldPretrainer.TryParseProgressLine("some other output", out _));
    }

    private static string ManifestFiles(string folder) =>
        string.Join("\n", System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "gill-artefact.json")))!["files"]!.AsObject()
            .Select(kv => kv.Key + "=" + kv.Value!.GetValue<string>()).Order(StringComparer.Ordinal));

    [TestMethod]
    public void CanonicalLayoutFixesOnlyWhatTheCaptionLeavesOpen()
    {
        var obj = new ShapesObject(ShapeKind.Star, ShapeColor.Green, ShapeSize.Small, ShapePosition.Left);
        var scene = new ShapesScene(ShapesBackground.Black, [obj]);
        ShapesImageExample Example(ShapesMentions m) => new(1, "caption", "x.png", scene, m);

        Assert.AreEqual(scene, WorldPretrainer.CanonicalLayout(Example(ShapesMentions.All)));
        var open = WorldPretrainer.CanonicalLayout(Example(ShapesMentions.Color | ShapesMentions.Shape)).Objects.Single();
        Assert.AreEqual(obj with { Size = ShapeSize.Large, Position = ShapePosition.Centre }, open);
        var sized = WorldPretrainer.CanonicalLayout(Example(ShapesMentions.Color | ShapesMentions.Shape | ShapesMentions.Size)).Objects.Single();
        Assert.AreEqual(obj with { Position = ShapePosition.Centre }, sized);
        var placed = WorldPretrainer.CanonicalLayout(Example(ShapesMentions.Color | ShapesMentions.Shape | ShapesMentions.Position)).Objects.Single();
        Assert.AreEqual(obj with { Size = ShapeSize.Large }, placed);

        // Two objects: "position" is their relation, and nothing is moved.
        var pair = new ShapesScene(ShapesBackground.Black, [obj, obj with { Position = ShapePosition.Right }]);
        Assert.AreEqual(pair, WorldPretrainer.CanonicalLayout(new ShapesImageExample(2, "caption", "y.png", pair, ShapesMentions.Color | ShapesMentions.Shape)));
    }

    [TestMethod]
    public void UnwritableCacheFolderGivesAClearError()
    {
        var file = Path.Combine(Path.GetTempPath(), "gill-not-a-folder-" + Guid.NewGuid().ToString("N"));
        File.WriteAllText(file, "x");
        try
        {
            var cache = Path.Combine(file, "cache");
            var e = Assert.ThrowsExactly<IOException>(() => WorldPretrainer.Run(Tiny(cache)));
            StringAssert.Contains(e.Message, cache);
            StringAssert.Contains(e.Message, "cannot be written");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [TestMethod]
    public void ZeroImageWorldGivesAClearError()
    {
        var o = Tiny(Path.Combine(Path.GetTempPath(), "gill-never-created-" + Guid.NewGuid().ToString("N")));
        o.World.Images = new ShapesSplitCounts(0, 10, 10);
        var e = Assert.ThrowsExactly<ArgumentException>(() => WorldPretrainer.Run(o));
        StringAssert.Contains(e.Message, "0 training images");
        Assert.IsFalse(Directory.Exists(o.CacheDirectory));
    }

    private static string? ArtefactManifestCheck(string folder) =>
        File.Exists(Path.Combine(folder, "gill-artefact.json")) ? folder : null;

    private static void CopyFolder(string from, string to)
    {
        foreach (var dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        foreach (var f in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(f, Path.Combine(to, Path.GetRelativePath(from, f)));
    }

    private sealed class CollectingProgress(List<WorldPretrainProgress> reports) : IProgress<WorldPretrainProgress>
    {
        public void Report(WorldPretrainProgress value)
        {
            lock (reports) reports.Add(value);
        }
    }

    private sealed class ListProgress(List<string> messages) : IProgress<WorldPretrainProgress>
    {
        public void Report(WorldPretrainProgress value)
        {
            if (value.Message is not null) messages.Add(value.Message);
        }
    }
}
