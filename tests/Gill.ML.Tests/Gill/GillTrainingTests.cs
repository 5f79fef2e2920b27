using Gill.ML.Modules;
using Gill.ML.Serialization;
using Gill.ML.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests;

[TestClass]
public class GillTrainingTests
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

    private static GillCoreModel FreshModel(long seed = 7)
    {
        var lm = CausalLM.Load(Fixtures.Dir("opt-tiny"));
        return new GillCoreModel(lm, GillTestData.StepConfig(), ownsLanguageModel: true, seed: seed);
    }

    private static GillTrainingOptions FastOptions() => new()
    {
        LearningRate = 3e-3,
        WarmupSteps = 0,
        LrStepSize = 1000,
        ConcatenationProbability = 0.5,
        Seed = 11,
    };

    private static Dictionary<string, Tensor> Snapshot(nn.Module module) =>
        module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone().DetachFromDisposeScope());

    private static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "gill-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }

    [TestMethod]
    public void FrozenBackboneStaysBitIdenticalWhileTrainableWeightsChange()
    {
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        var lm = (nn.Module)model.LanguageModel;
        var lmBefore = Snapshot(lm);
        var headsBefore = Snapshot(model.Heads);
        using var step = new GillTrainingStep(model, FastOptions());
        for (int i = 0; i < 3; i++) step.Step(GillTestData.StepBatch(io));
        foreach (var (k, v) in lm.state_dict())
            Assert.IsTrue(v.EqualTo(lmBefore[k]), $"frozen LM tensor {k} changed");
        foreach (var (k, v) in model.Heads.state_dict())
            Assert.IsFalse(v.EqualTo(headsBefore[k]), $"trainable tensor {k} did not change");
        Assert.IsTrue(lm.parameters().All(p => !p.requires_grad));
        Assert.AreEqual(3, step.StepsTaken);
    }

    [TestMethod]
    public void ImgRowsHaveTheMeanFrozenNormAfterAStep()
    {
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        var w = model.LanguageModel.InputEmbeddingWeight;
        double expected = w.norm(1).mean().item<float>();
        Assert.AreEqual(expected, model.FrozenEmbeddingMeanNorm, 1e-5 * expected);
        using var step = new GillTrainingStep(model, FastOptions());
        step.Step(GillTestData.StepBatch(io));
        var norms = model.Heads.ImgTokenEmbeddings.norm(1).data<float>().ToArray();
        foreach (var n in norms) Assert.AreEqual(expected, n, 1e-5 * expected);
    }

    [TestMethod]
    public void LossDecreasesOnALearnableSyntheticSet()
    {
        using var model = FreshModel();
        var batches = GillTestData.SyntheticBatches(model.Config, 2, 4, 12, seed: 3);
        using var step = new GillTrainingStep(model, FastOptions());
        var totals = new List<double>();
        for (int i = 0; i < 30; i++) totals.Add(step.Step(batches[i % batches.Count]).Losses.Total);
        double first = totals.Take(4).Average(), last = totals.TakeLast(4).Average();
        Assert.IsTrue(last < 0.85 * first, $"loss {first:F4} -> {last:F4}");
        Assert.IsTrue(totals.All(double.IsFinite));
    }

    [TestMethod]
    public void LiveTensorCountDoesNotGrowAcrossSteps()
    {
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        var batch = GillTestData.StepBatch(io);
        using var step = new GillTrainingStep(model, FastOptions());
        step.Step(batch);
        step.Step(batch);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 4; i++) step.Step(new[] { batch, batch });
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Assert.AreEqual(before, after, "live tensors grew across optimizer steps");
    }

    [TestMethod]
    public void TrainableWeightsRoundTripThroughSafetensorsUnderTheOriginalNames()
    {
        var dir = TempDir();
        try
        {
            using var model = FreshModel(seed: 1);
            var path = Path.Combine(dir, "heads.safetensors");
            GillWeights.Save(model.Heads, path);
            using (var f = SafeTensorsFile.Open(path))
            {
                Assert.IsTrue(f.Tensors.ContainsKey("img_token_embeddings"));
                Assert.IsTrue(f.Tensors.ContainsKey("ret_text_hidden_fcs.0.model.weight"));
                Assert.IsTrue(f.Tensors.ContainsKey("gen_text_hidden_fcs.0.tfm.decoder.norm.weight"));
                Assert.AreEqual(0, f.Tensors["logit_scale"].Shape.Length);
            }
            using var other = new GillHeads(model.Config, 32, seed: 2);
            GillWeights.Load(other, path);
            foreach (var (k, v) in model.Heads.state_dict())
                Assert.IsTrue(v.EqualTo(other.state_dict()[k]), k);

            model.Save(Path.Combine(dir, "core"));
            using var reloaded = GillCoreModel.Load(CausalLM.Load(Fixtures.Dir("opt-tiny")), Path.Combine(dir, "core"), ownsLanguageModel: true);
            foreach (var (k, v) in model.Heads.state_dict())
                Assert.IsTrue(v.EqualTo(reloaded.Heads.state_dict()[k]), k);
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void ConvertedOriginalCheckpointLayoutLoads()
    {
        var dir = TempDir();
        try
        {
            using var model = FreshModel(seed: 1);
            var sd = model.Heads.state_dict();
            var original = sd.Select(kv => new KeyValuePair<string, Tensor>(
                "model." + (kv.Key == "img_token_embeddings" ? "input_embeddings.weight" : kv.Key), kv.Value)).ToList();
            var path = Path.Combine(dir, "pretrained_ckpt.safetensors");
            SafeTensors.Save(path, original);
            using var heads = new GillHeads(model.Config, 32, seed: 5);
            GillWeights.Load(heads, path);
            foreach (var (k, v) in sd) Assert.IsTrue(v.EqualTo(heads.state_dict()[k]), k);

            // An unpruned checkpoint holding the whole resized table: the [IMG] rows are picked by id.
            var table = torch.zeros(100, 32);
            table.index_copy_(0, torch.tensor(new long[] { 96, 97, 98, 99 }), sd["img_token_embeddings"]);
            var full = original.Select(kv => kv.Key == "model.input_embeddings.weight" ? new KeyValuePair<string, Tensor>(kv.Key, table) : kv).ToList();
            SafeTensors.Save(path, full);
            using var heads2 = new GillHeads(model.Config, 32, seed: 6);
            GillWeights.Load(heads2, path);
            Assert.IsTrue(heads2.ImgTokenEmbeddings.EqualTo(sd["img_token_embeddings"]));

            // Strictness: an unknown tensor and a missing one are named.
            SafeTensors.Save(path, original.Append(new("model.lm.decoder.foo", torch.zeros(2))));
            var ex = Assert.ThrowsExactly<InvalidDataException>(() => GillWeights.Load(heads2, path));
            StringAssert.Contains(ex.Message, "model.lm.decoder.foo");
            SafeTensors.Save(path, original.Where(kv => kv.Key != "model.visual_fc.bias"));
            ex = Assert.ThrowsExactly<InvalidDataException>(() => GillWeights.Load(heads2, path));
            StringAssert.Contains(ex.Message, "model.visual_fc.bias");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void ResumedRunEqualsUninterruptedRun()
    {
        var dirA = TempDir();
        var dirB = TempDir();
        try
        {
            GillTrainingOptions Options(string dir) => new()
            {
                LearningRate = 3e-3, WarmupSteps = 2, LrStepSize = 3, LrGamma = 0.5, ConcatenationProbability = 0.5, Seed = 9,
                GradAccumulationSteps = 2, TotalSteps = 6, CheckpointDirectory = dir, CheckpointEvery = 2, KeepCheckpoints = 2,
            };
            Dictionary<string, Tensor> uninterrupted;
            var reports = new List<GillTrainingProgress>();
            using (var model = FreshModel(seed: 4))
            {
                var batches = GillTestData.SyntheticBatches(model.Config, 3, 4, 12, seed: 8);
                using var trainer = new GillTrainer(model, Options(dirA));
                var result = trainer.Train(batches, new SyncProgress<GillTrainingProgress>(reports.Add));
                Assert.AreEqual(6, result.StepsCompleted);
                Assert.IsFalse(result.Cancelled);
                uninterrupted = Snapshot(model.Heads);
            }
            // A second uninterrupted run: CPU float32 kernels are not bit-reproducible across runs (last-bit
            // differences that Adam amplifies on near-zero gradients), so runs are compared with the fixtures' tolerance.
            using (var model = FreshModel(seed: 4))
            {
                var batches = GillTestData.SyntheticBatches(model.Config, 3, 4, 12, seed: 8);
                var o = Options(dirA + "x");
                using var trainer = new GillTrainer(model, o);
                trainer.Train(batches);
                foreach (var (k, v) in model.Heads.state_dict())
                    Fixtures.AssertClose(uninterrupted[k], v, $"repeat {k}");
            }
            Directory.Delete(dirA + "x", true);
            Assert.AreEqual(6, reports.Count);
            Assert.AreEqual(6, reports[^1].Step);
            Assert.AreEqual(0.0, reports[0].LearningRate);
            Assert.IsTrue(reports.All(r => r.ExamplesPerSecond > 0 && r.Stage == "joint" && r.TotalSteps == 6));
            Assert.AreEqual(2, Directory.GetDirectories(dirA, "step-*").Length);

            using (var model = FreshModel(seed: 4))
            {
                var batches = GillTestData.SyntheticBatches(model.Config, 3, 4, 12, seed: 8);
                using var cts = new CancellationTokenSource();
                using var trainer = new GillTrainer(model, Options(dirB));
                var result = trainer.Train(batches, new SyncProgress<GillTrainingProgress>(p => { if (p.Step == 3) cts.Cancel(); }), cts.Token);
                Assert.IsTrue(result.Cancelled);
                Assert.AreEqual(3, result.StepsCompleted);
                StringAssert.EndsWith(result.LastCheckpoint, "step-00000003");
            }
            using (var model = FreshModel(seed: 99))
            {
                var batches = GillTestData.SyntheticBatches(model.Config, 3, 4, 12, seed: 8);
                using var trainer = new GillTrainer(model, Options(dirB));
                var result = trainer.Train(batches);
                Assert.AreEqual(3, result.ResumedFromStep);
                Assert.AreEqual(6, result.StepsCompleted);
                foreach (var (k, v) in model.Heads.state_dict())
                    Fixtures.AssertClose(uninterrupted[k], v, $"resumed {k}");
            }
        }
        finally
        {
            Directory.Delete(dirA, true);
            Directory.Delete(dirB, true);
        }
    }

    [TestMethod]
    public void ConcatenationKeepsTheFirstExampleOfEachPairAndEveryEmbedding()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        using var step = new GillTrainingStep(model, FastOptions());
        var batch = GillTestData.StepBatch(io);
        var plain = step.Forward(batch);
        var paired = step.Forward(batch, new GillConcatenation(true, true, true));
        CollectionAssert.AreEqual(plain.ImgHiddenStates.shape, paired.ImgHiddenStates.shape);
        CollectionAssert.AreEqual(plain.RetrievalTextEmbedding.shape, paired.RetrievalTextEmbedding.shape);
        // The LM is causal: the first example of each pair sees exactly what it saw alone.
        var even = torch.tensor(new long[] { 0, 2 });
        Fixtures.AssertClose(plain.ImgHiddenStates.index_select(0, even), paired.ImgHiddenStates.index_select(0, even), "first example of each pair");
        // The second one now also sees its partner caption.
        var odd = torch.tensor(new long[] { 1, 3 });
        Assert.IsTrue((plain.ImgHiddenStates.index_select(0, odd) - paired.ImgHiddenStates.index_select(0, odd)).abs().max().item<float>() > 1e-3);
        Assert.IsTrue(double.IsFinite(paired.Total.item<float>()));
        Assert.AreNotEqual(plain.Captioning.item<float>(), paired.Captioning.item<float>());
        // Only the generation pass concatenated: the retrieval pass keeps the unpaired states.
        var genOnly = step.Forward(batch, new GillConcatenation(false, false, true));
        Fixtures.AssertClose(plain.RetrievalTextEmbedding, genOnly.RetrievalTextEmbedding, "retrieval pass without concatenation");
        Fixtures.AssertClose(paired.GenerationOutput, genOnly.GenerationOutput, "generation pass with concatenation");
    }

    [TestMethod]
    public void BadBatchesAreRejectedWithClearMessages()
    {
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        using var step = new GillTrainingStep(model, FastOptions());
        var wrongLen = new GillBatch(io["visual_features"], io["tokens"], io["caption_len"] - 1, io["gen_targets"]);
        var ex = Assert.ThrowsExactly<ArgumentException>(() => step.Step(wrongLen));
        StringAssert.Contains(ex.Message, "[IMG");
        var wrongFeat = new GillBatch(io["visual_features"].narrow(1, 0, 10), io["tokens"], io["caption_len"], io["gen_targets"]);
        ex = Assert.ThrowsExactly<ArgumentException>(() => step.Step(wrongFeat));
        StringAssert.Contains(ex.Message, "VisualFeatures");
        var noTargets = new GillBatch(io["visual_features"], io["tokens"], io["caption_len"], null);
        ex = Assert.ThrowsExactly<ArgumentException>(() => step.Step(noTargets));
        StringAssert.Contains(ex.Message, "GenerationTargets");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new GillTrainingOptions { GradClip = -1 }.Validate());
    }

    [TestMethod]
    public void LearningRateScheduleIsWarmupThenStepDecay()
    {
        var o = new GillTrainingOptions { LearningRate = 1.0, WarmupSteps = 4, LrStepSize = 3, LrGamma = 0.1 };
        double[] expected = { 0, 0.25, 0.5, 0.75, 1, 1, 1, 0.1, 0.1, 0.1, 0.01 };
        for (int s = 0; s < expected.Length; s++) Assert.AreEqual(expected[s], o.LearningRateAt(s), 1e-12, $"step {s}");
    }

    [TestMethod]
    public void DecisionClassifiersTrainAndRoundTrip()
    {
        using var scope = torch.NewDisposeScope();
        torch.random.manual_seed(3);
        var x = torch.randn(64, 32);
        var direction = torch.randn(32);
        var labels = torch.matmul(x, direction).gt(0).to(ScalarType.Int64);
        var opts = new GillDecisionTrainingOptions { Steps = 200, Seed = 1 };
        using var released = new GillDecisionClassifier(GillDecisionKind.Released, 32, seed: 1);
        var history = released.Train(x, labels, options: opts);
        Assert.IsTrue(history[^1] < history[0]);
        var metrics = released.Evaluate(x, labels);
        Assert.IsTrue(metrics.Accuracy > 0.9 && metrics.MacroF1 > 0.9, $"{metrics}");

        var dir = TempDir();
        try
        {
            var path = Path.Combine(dir, "decision_model.safetensors");
            released.Save(path);
            using (var f = SafeTensorsFile.Open(path))
                CollectionAssert.AreEquivalent(new[] { "1.weight", "1.bias" }, f.Tensors.Keys.ToArray());
            using var loaded = new GillDecisionClassifier(GillDecisionKind.Released, 32, seed: 2);
            loaded.Load(path);
            Assert.IsTrue(loaded.Logits(x).EqualTo(released.Logits(x)));
        }
        finally { Directory.Delete(dir, true); }

        var candidates = torch.randn(10, 8);
        var maxScores = GillDecisionClassifier.MaxCosineScores(torch.randn(64, 8), candidates);
        Assert.IsTrue(maxScores.le(1.0001).all().item<bool>());
        using var paper = new GillDecisionClassifier(GillDecisionKind.PaperWithMaxScore, 32, seed: 1);
        paper.Train(x, labels, maxScores, opts);
        Assert.IsTrue(paper.Evaluate(x, labels, maxScores).Accuracy > 0.9);
        var p = paper.RetrieveProbability(x, maxScores);
        Assert.IsTrue(p.ge(0).all().item<bool>() && p.le(1).all().item<bool>());
    }
}
