using Gill.ML.MLNet;
using Gill.ML.Stages;
using Gill.ML.Stages.Joint;
using Gill.ML.Training;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;

namespace Gill.ML.Tests.Stages;

[TestClass]
public class GillJointTrainerTests
{
    [ClassInitialize]
    public static void Init(TestContext _) => GillTestThreads.Enter();

    [ClassCleanup]
    public static void Cleanup() => GillTestThreads.Leave();

    private sealed class SyncProgress<T> : IProgress<T>
    {
        private readonly Action<T> _action;
        public SyncProgress(Action<T> action) => _action = action;
        public void Report(T value) => _action(value);
    }

    private static GillJointTrainer.Options Options(GillLanguageBackbone backbone, int? maxSteps = 4, string? checkpoints = null) => new()
    {
        Backbone = backbone,
        Architecture = StageTestData.Architecture(),
        MaxSequenceLength = StageTestData.MaxLength,
        BatchSize = 4,
        MaxSteps = maxSteps,
        Seed = 17,
        Training = new GillTrainingOptions
        {
            LearningRate = 3e-3, WarmupSteps = 0, LrStepSize = 1000, ConcatenationProbability = 0.5,
            CheckpointDirectory = checkpoints, CheckpointEvery = 2, KeepCheckpoints = 5,
        },
    };

    [TestMethod]
    public void SchemaPropagatesThroughAnEstimatorChain()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(4));
        var pipeline = ml.Transforms.CopyColumns("CaptionCopy", "Caption")
            .Append(ml.Gill().Trainers.Gill(Options(backbone)));
        var shape = pipeline.GetOutputSchema(GillSchemaShape.FromSchema(ml, data.Schema));
        var expected = new Dictionary<string, int[]>
        {
            [GillColumnNames.VisualTokens] = new[] { 2, 32 },
            [GillColumnNames.ImgHiddenStates] = new[] { 4, 32 },
            [GillColumnNames.GenerationEmbedding] = new[] { StageTestData.TargetTokens, StageTestData.TargetWidth },
            [GillColumnNames.TextRetrievalEmbedding] = new[] { 8 },
            [GillColumnNames.ImageRetrievalEmbedding] = new[] { 8 },
        };
        foreach (var name in expected.Keys)
            Assert.IsTrue(shape.Any(c => c.Name == name), $"shape lacks {name}");
        Assert.IsTrue(shape.Any(c => c.Name == "CaptionCopy"));
        using var model = pipeline.Fit(data);
        var output = model.Transform(data);
        foreach (var (name, dims) in expected)
        {
            var type = (VectorDataViewType)output.Schema[name].Type;
            CollectionAssert.AreEqual(dims, type.Dimensions.ToArray(), name);
            Assert.AreEqual(NumberDataViewType.Single, type.ItemType);
        }
        (model.LastTransformer as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void BadInputGivesClearErrors()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var trainer = ml.Gill().Trainers.Gill(Options(backbone));

        var noCaption = ml.Data.LoadFromEnumerable(StageTestData.Rows(2).Select(r => new { r.ClipPooledFeatures }).ToList());
        var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => trainer.Fit(ml.Data.LoadFromEnumerable(new[] { new NoCaptionRow() })));
        StringAssert.Contains(e1.Message, "Caption");

        var wrong = ml.Data.LoadFromEnumerable(new[] { new WrongSizeRow { Caption = "red box", ClipPooledFeatures = new float[10], GenerationTarget = new float[8 * 24] } });
        var e2 = Assert.Throws<ArgumentOutOfRangeException>(() => trainer.Fit(wrong));
        StringAssert.Contains(e2.Message, "ClipPooledFeatures");
        StringAssert.Contains(e2.Message, "32");

        var rows = StageTestData.Rows(4);
        rows[2].Caption = "";
        var e3 = Assert.Throws<InvalidDataException>(() => trainer.Fit(ml.Data.LoadFromEnumerable(rows)));
        StringAssert.Contains(e3.Message, "empty");
        StringAssert.Contains(e3.Message, "'Caption', row 2");

        rows = StageTestData.Rows(4);
        rows[1].Caption = "a very long caption";
        var e4 = Assert.Throws<InvalidDataException>(() => trainer.Fit(ml.Data.LoadFromEnumerable(rows)));
        StringAssert.Contains(e4.Message, "maximum sequence length 14");
        Assert.IsNotNull(noCaption);
    }

    private sealed class NoCaptionRow
    {
        [VectorType(StageTestData.FeatureSize)] public float[] ClipPooledFeatures { get; set; } = new float[StageTestData.FeatureSize];
    }

    private sealed class WrongSizeRow
    {
        public string Caption { get; set; } = "";
        [VectorType(10)] public float[] ClipPooledFeatures { get; set; } = new float[10];
        [VectorType(StageTestData.TargetTokens, StageTestData.TargetWidth)] public float[] GenerationTarget { get; set; } = Array.Empty<float>();
    }

    [TestMethod]
    public void FrozenWeightsStayBitIdenticalAndOnlyTrainableTensorsChange()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var lm = (torch.nn.Module)backbone.LanguageModel;
        var before = StageTestData.Snapshot(lm);
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(8));
        var o = Options(backbone, maxSteps: 3);
        using var fresh = new Modules.GillHeads(backbone.Configure(o.Architecture!), backbone.EmbeddingSize, seed: 17);
        var initial = StageTestData.Snapshot(fresh);
        using var model = ml.Gill().Trainers.Gill(o).Fit(data);
        foreach (var (k, v) in lm.state_dict())
            Assert.IsTrue(v.EqualTo(before[k]), $"frozen LM tensor {k} changed");
        Assert.IsTrue(lm.parameters().All(p => !p.requires_grad));
        foreach (var (k, v) in model.Parts.Core.Heads.state_dict())
            Assert.IsFalse(v.EqualTo(initial[k]), $"trainable tensor {k} did not change");
    }

    [TestMethod]
    public void LossDecreasesOnALearnableSet()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(8));
        var losses = new List<double>();
        var o = Options(backbone, maxSteps: 30);
        o.Progress = new SyncProgress<GillTrainingProgress>(p => losses.Add(p.Losses.Total));
        using var model = ml.Gill().Trainers.Gill(o).Fit(data);
        Assert.AreEqual(30, losses.Count);
        double first = losses.Take(3).Average(), last = losses.Skip(27).Average();
        Assert.IsTrue(last < 0.8 * first, $"loss went from {first:F4} to {last:F4}");
    }

    [TestMethod]
    public void SaveLoadReproducesOutputsAndTheManifestRecordsTheBackbones()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(6));
        using var model = ml.Gill().Trainers.Gill(Options(backbone, maxSteps: 2)).Fit(data);
        var dir = StageTestData.NewDir("save");
        var path = Path.Combine(dir, "gill.zip");
        ml.Gill().Model.Save(model, data.Schema, path);
        var loaded = ml.Gill().Model.Load(path, out var schema);
        try
        {
            var a = model.Transform(data);
            var b = loaded.Transform(data);
            foreach (var c in new[] { GillColumnNames.VisualTokens, GillColumnNames.ImgHiddenStates, GillColumnNames.GenerationEmbedding,
                         GillColumnNames.TextRetrievalEmbedding, GillColumnNames.ImageRetrievalEmbedding })
                StageTestData.AssertNearlySame(StageTestData.Column(a, c), StageTestData.Column(b, c), c);
            Assert.IsNotNull(schema.GetColumnOrNull("Caption"));
            using var zip = System.IO.Compression.ZipFile.OpenRead(path);
            var manifest = zip.Entries.First(e => e.FullName.EndsWith("-Gill/manifest.json", StringComparison.Ordinal));
            using var reader = new StreamReader(manifest.Open());
            var text = reader.ReadToEnd();
            foreach (var s in new[] { "\"formatVersion\": 1", "\"seed\": 17", "language-model", "tokenizer", "sha256", "[IMG3]", "maxSequenceLength", "\"caption\": \"Caption\"", "\"LearningRate\": 0.003" })
                StringAssert.Contains(text, s);
        }
        finally
        {
            (loaded as IDisposable)?.Dispose();
        }

        // A changed backbone file is a clear error unless the mismatch is allowed.
        var copy = StageTestData.NewDir("tok-copy");
        foreach (var f in Directory.GetFiles(StageTestData.TokenizerFolder)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        File.AppendAllText(Path.Combine(copy, "merges.txt"), "\n");
        var options = new Persistence.GillModelLoadOptions();
        options.BackbonePaths["tokenizer"] = copy;
        var e = Assert.Throws<InvalidDataException>(() => ml.Gill().Model.Load(path, out _, options));
        StringAssert.Contains(e.Message, "SHA-256");
        options.AllowBackboneMismatch = true;
        var relaxed = ml.Gill().Model.Load(path, out _, options);
        (relaxed as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void ResumeEqualsUninterruptedTraining()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(8));
        using var straight = ml.Gill().Trainers.Gill(Options(backbone, maxSteps: 4)).Fit(data);

        var dir = StageTestData.NewDir("ckpt");
        using (var first = ml.Gill().Trainers.Gill(Options(backbone, maxSteps: 2, checkpoints: dir)).Fit(data)) { }
        Assert.IsNotNull(GillTrainer.LatestCheckpoint(dir));
        using var resumed = ml.Gill().Trainers.Gill(Options(backbone, maxSteps: 4, checkpoints: dir)).Fit(data);
        var a = straight.Parts.Core.Heads.state_dict();
        // Within the fixtures' float32 tolerance, as the core trainer's own resume test (Adam amplifies last-bit differences of tiny gradients).
        foreach (var (k, v) in resumed.Parts.Core.Heads.state_dict())
            Fixtures.AssertClose(a[k], v, $"resumed {k}");
    }

    [TestMethod]
    public void CancellationStopsWithACheckpoint()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(8));
        var dir = StageTestData.NewDir("cancel");
        using var cts = new CancellationTokenSource();
        var o = Options(backbone, maxSteps: 50, checkpoints: dir);
        o.CancellationToken = cts.Token;
        o.Progress = new SyncProgress<GillTrainingProgress>(p => { if (p.Step == 2) cts.Cancel(); });
        Assert.Throws<OperationCanceledException>(() => ml.Gill().Trainers.Gill(o).Fit(data));
        Assert.IsTrue(GillTrainer.LatestCheckpoint(dir)!.EndsWith("step-00000002", StringComparison.Ordinal));
    }

    [TestMethod]
    public void TransformDoesNotLeakTensors()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(6));
        using var model = ml.Gill().Trainers.Gill(Options(backbone, maxSteps: 1)).Fit(data);
        void Pass()
        {
            var output = model.Transform(data);
            foreach (var c in new[] { GillColumnNames.VisualTokens, GillColumnNames.GenerationEmbedding, GillColumnNames.TextRetrievalEmbedding })
                StageTestData.Column(output, c);
        }
        Pass();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) Pass();
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount, "live tensors grew across transform passes");

        // Training steps do not leak either: a second fit of the same size leaves the same count.
        using (ml.Gill().Trainers.Gill(Options(backbone, maxSteps: 2)).Fit(data)) { }
        long afterOne = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using (ml.Gill().Trainers.Gill(Options(backbone, maxSteps: 2)).Fit(data)) { }
        Assert.AreEqual(afterOne, DisposeScopeManager.Statistics.ThreadTotalLiveCount, "live tensors grew across fits");
    }

    [TestMethod]
    public void ExposesStageTransformersThatMatchTheJointOutputs()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(4));
        using var model = ml.Gill().Trainers.Gill(Options(backbone, maxSteps: 1)).Fit(data);
        var joint = model.Transform(data);
        var staged = model.GillMapper.Transform(model.ImgTokens.Transform(data));
        StageTestData.AssertSame(StageTestData.Column(joint, GillColumnNames.GenerationEmbedding), StageTestData.Column(staged, GillColumnNames.GenerationEmbedding), "generation");
        var tokens = model.CaptionMapping.Transform(data);
        StageTestData.AssertSame(StageTestData.Column(joint, GillColumnNames.VisualTokens), StageTestData.Column(tokens, GillColumnNames.VisualTokens), "visual tokens");
        var captions = model.Captioning.Transform(data);
        using var cursor = captions.GetRowCursor(new[] { captions.Schema["GeneratedCaption"] });
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(captions.Schema["GeneratedCaption"]);
        int n = 0;
        ReadOnlyMemory<char> text = default;
        while (cursor.MoveNext()) { getter(ref text); n++; }
        Assert.AreEqual(4, n);
    }

    private sealed class ImageRow
    {
        public string Image { get; set; } = "";
        public string Caption { get; set; } = "";
        [VectorType(StageTestData.TargetTokens, StageTestData.TargetWidth)] public float[] GenerationTarget { get; set; } = Array.Empty<float>();
    }

    [TestMethod]
    public void TrainsFromImagesWithAVisualEncoderAndReloadsIt()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        using var images = new MLNet.TestImages(4);
        using var clip = new Gill.ML.Stages.VisualFeatures.ClipVisualEncoder(Fixtures.Dir("clip-vision-tiny"));
        var rows = StageTestData.Rows(4).Select((r, i) => new ImageRow { Image = images.Paths[i], Caption = r.Caption, GenerationTarget = r.GenerationTarget }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var o = Options(backbone, maxSteps: 2);
        o.VisualEncoder = clip;
        using var model = ml.Gill().Trainers.Gill(o).Fit(data);
        Assert.IsNotNull(model.VisualFeatures);
        var path = Path.Combine(StageTestData.NewDir("image-model"), "m.zip");
        ml.Gill().Model.Save(model, data.Schema, path);
        var loaded = ml.Gill().Model.Load(path, out _);
        try
        {
            // The reloaded CLIP tower is a separate copy of the weights; its GEMMs may round differently in the last bits.
            var before = StageTestData.Column(model.Transform(data), GillColumnNames.ImageRetrievalEmbedding);
            var after = StageTestData.Column(loaded.Transform(data), GillColumnNames.ImageRetrievalEmbedding);
            for (int i = 0; i < before.Count; i++)
                Fixtures.AssertClose(torch.tensor(before[i]), torch.tensor(after[i]), $"image retrieval embedding row {i}", 1e-5);
        }
        finally
        {
            (loaded as IDisposable)?.Dispose();
        }
        rows[1].Image = Path.Combine(images.Folder, "missing.png");
        var e = Assert.Throws<FileNotFoundException>(() => ml.Gill().Trainers.Gill(o).Fit(ml.Data.LoadFromEnumerable(rows)));
        StringAssert.Contains(e.Message, "'Image'");
    }
}
