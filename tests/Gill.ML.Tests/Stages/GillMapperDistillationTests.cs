using Gill.ML.Stages;
using Gill.ML.Stages.Joint;
using Gill.ML.Training;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Stages;

[TestClass]
public class GillMapperDistillationTests
{
    [ClassInitialize]
    public static void Init(TestContext _) => GillTestThreads.Enter();

    [ClassCleanup]
    public static void Cleanup() => GillTestThreads.Leave();

    private sealed class SyncProgress<T>(Action<T> action) : IProgress<T>
    {
        public void Report(T value) => action(value);
    }

    private static GillJointTrainer.Options Options(GillLanguageBackbone backbone, int distillEpochs, IProgress<GillTrainingProgress>? progress = null) => new()
    {
        Backbone = backbone,
        Architecture = StageTestData.Architecture(),
        MaxSequenceLength = StageTestData.MaxLength,
        BatchSize = 4,
        MaxSteps = 3,
        Seed = 17,
        Progress = progress,
        MapperDistillation = distillEpochs > 0 ? new GillMapperDistillationOptions { Epochs = distillEpochs, BatchSize = 4, LearningRate = 3e-3 } : null,
        Training = new GillTrainingOptions { LearningRate = 3e-3, WarmupSteps = 0, LrStepSize = 1000 },
    };

    [TestMethod]
    public void DistillationTrainsOnlyTheMapperAndLowersTheGenerationLoss()
    {
        var ml = new MLContext(1);
        using var backbone = StageTestData.Backbone();
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(8));
        var steps = new List<GillTrainingProgress>();
        using var plain = ml.Gill().Trainers.Gill(Options(backbone, 0)).Fit(data);
        using var distilled = ml.Gill().Trainers.Gill(Options(backbone, 6, new SyncProgress<GillTrainingProgress>(p => { if (p.Stage == "mapper-distillation") steps.Add(p); }))).Fit(data);

        Assert.AreEqual(6 * 2, steps.Count, "6 epochs of 8 rows in batches of 4");
        Assert.AreEqual(12, steps[^1].TotalSteps);
        Assert.IsTrue(distilled.Parts.Core.Heads.parameters().All(p => p.requires_grad), "requires_grad is restored on the other heads");
        double plainLoss = GenerationLoss(ml, plain, data), distilledLoss = GenerationLoss(ml, distilled, data);
        Assert.IsTrue(distilledLoss < plainLoss, $"generation loss on the training rows: {distilledLoss:F4} with distillation vs {plainLoss:F4} without");

        double first = steps.Take(2).Average(p => p.Losses.Generation), last = steps.Skip(10).Average(p => p.Losses.Generation);
        Assert.IsTrue(last < first, $"distillation loss went from {first:F4} to {last:F4}");
    }

    private static double GenerationLoss(MLContext ml, GillTransformer model, IDataView data)
    {
        var scored = model.Transform(data);
        var output = StageTestData.Column(scored, GillColumnNames.GenerationEmbedding);
        var target = StageTestData.Column(data, GillColumnNames.GenerationTarget);
        double sum = 0;
        for (int i = 0; i < output.Count; i++) sum += output[i].Zip(target[i], (x, y) => (x - y) * (double)(x - y)).Sum();
        return sum / output.Count;
    }

    [TestMethod]
    public void DistillationIsDeterministicAndKeepsLiveTensorsConstant()
    {
        var config = StageTestData.Architecture();
        using var backbone = StageTestData.Backbone();
        var c = backbone.Configure(config);
        var gen = new Generator(3);
        using var states = torch.randn(new long[] { 10, c.NumTokens, backbone.EmbeddingSize }, generator: gen);
        using var targets = torch.randn(new long[] { 10, c.NumClipTokens, c.GenEmbDim }, generator: gen);
        var o = new GillMapperDistillationOptions { Epochs = 2, BatchSize = 4, Seed = 5 };
        var results = new List<IReadOnlyList<double>>();
        var weights = new List<Dictionary<string, Tensor>>();
        long live = -1;
        for (int run = 0; run < 2; run++)
        {
            using var core = new Modules.GillCoreModel(backbone.LanguageModel, c, seed: 11);
            var before = StageTestData.Snapshot(core.Heads);
            if (run == 1) live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            results.Add(GillMapperDistillation.Run(core, states, targets, o));
            if (run == 1) Assert.AreEqual(live, DisposeScopeManager.Statistics.ThreadTotalLiveCount, "live tensors grew during distillation");
            var after = StageTestData.Snapshot(core.Heads);
            foreach (var (k, v) in before)
            {
                bool mapper = k.StartsWith(GillMapperDistillation.MapperPrefix, StringComparison.Ordinal);
                Assert.AreEqual(!mapper, v.EqualTo(after[k]), mapper ? $"mapper tensor {k} did not change" : $"non-mapper tensor {k} changed");
            }
            weights.Add(after);
        }
        Assert.IsTrue(results[0][^1] < results[0][0], $"epoch losses {string.Join(", ", results[0])}");
        CollectionAssert.AreEqual(results[0].ToArray(), results[1].ToArray());
        foreach (var (k, v) in weights[0]) Assert.IsTrue(v.EqualTo(weights[1][k]), k);
    }

    [TestMethod]
    public void BadInputGivesClearErrors()
    {
        using var backbone = StageTestData.Backbone();
        var c = backbone.Configure(StageTestData.Architecture());
        using var core = new Modules.GillCoreModel(backbone.LanguageModel, c, seed: 1);
        using var states = torch.zeros(4, c.NumTokens, backbone.EmbeddingSize);
        using var wrong = torch.zeros(3, c.NumClipTokens, c.GenEmbDim);
        var ex = Assert.ThrowsExactly<ArgumentException>(() => GillMapperDistillation.Run(core, states, wrong, new GillMapperDistillationOptions { Epochs = 1 }));
        StringAssert.Contains(ex.Message, "Targets must be [4,");
        using var badStates = torch.zeros(4, c.NumTokens + 1, backbone.EmbeddingSize);
        Assert.ThrowsExactly<ArgumentException>(() => GillMapperDistillation.Run(core, badStates, wrong, new GillMapperDistillationOptions { Epochs = 1 }));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => GillMapperDistillation.Run(core, states, wrong, new GillMapperDistillationOptions { Epochs = -1 }));

        var ml = new MLContext(1);
        var o = Options(backbone, 2);
        o.Training.GenerationLossWeight = 0;
        var e2 = Assert.ThrowsExactly<ArgumentException>(() => ml.Gill().Trainers.Gill(o));
        StringAssert.Contains(e2.Message, "GenerationLossWeight");
    }
}
