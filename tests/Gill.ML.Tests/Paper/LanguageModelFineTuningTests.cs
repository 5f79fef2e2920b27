using Gill.ML.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Paper;

[TestClass]
public sealed class LanguageModelFineTuningTests
{
    [ClassInitialize]
    public static void Init(TestContext _) => GillTestThreads.Enter();

    [ClassCleanup]
    public static void Cleanup() => GillTestThreads.Leave();

    private static GillTrainingOptions Options(bool trainLm) => new()
    {
        LearningRate = 3e-3, WarmupSteps = 0, LrStepSize = 1000, ConcatenationProbability = 0, Seed = 11,
        TrainLanguageModel = trainLm, LanguageModelLearningRate = 1e-3,
    };

    private static Dictionary<string, Tensor> Snapshot(nn.Module module) =>
        module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone().DetachFromDisposeScope());

    [TestMethod]
    public void DefaultLeavesTheLanguageModelBitIdentical()
    {
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        var lm = (nn.Module)model.LanguageModel;
        var before = Snapshot(lm);
        using (var step = new GillTrainingStep(model, Options(trainLm: false)))
            for (int i = 0; i < 2; i++) step.Step(GillTestData.StepBatch(io));
        foreach (var (k, v) in lm.state_dict()) Assert.IsTrue(v.EqualTo(before[k]), $"LM tensor {k} changed although TrainLanguageModel is off");
        Assert.IsTrue(lm.parameters().All(p => !p.requires_grad));
    }

    [TestMethod]
    public void TrainLanguageModelChangesItsWeightsAndRefreezesAfterwards()
    {
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        var lm = (nn.Module)model.LanguageModel;
        var before = Snapshot(lm);
        var headsBefore = Snapshot(model.Heads);
        double firstLoss, lastLoss;
        using (var step = new GillTrainingStep(model, Options(trainLm: true)))
        {
            Assert.IsTrue(lm.parameters().All(p => p.requires_grad), "the LM is trainable during training");
            firstLoss = step.Step(GillTestData.StepBatch(io)).Losses.Total;
            lastLoss = firstLoss;
            for (int i = 0; i < 3; i++) lastLoss = step.Step(GillTestData.StepBatch(io)).Losses.Total;
        }
        int changed = lm.state_dict().Count(kv => !kv.Value.EqualTo(before[kv.Key]));
        Assert.IsTrue(changed >= before.Count / 2, $"only {changed} of {before.Count} LM tensors changed");
        foreach (var (k, v) in model.Heads.state_dict()) Assert.IsFalse(v.EqualTo(headsBefore[k]), $"head tensor {k} did not change");
        Assert.IsTrue(lm.parameters().All(p => !p.requires_grad), "gradients are switched off again after training");
        Assert.IsTrue(lastLoss < firstLoss, $"loss fell: {firstLoss} → {lastLoss}");
    }

    [TestMethod]
    public void LanguageModelTrainingRejectsCheckpointsAndBadRates()
    {
        using var model = GillTestData.LoadStepModel();
        var o = Options(trainLm: true);
        o.CheckpointDirectory = Path.Combine(Path.GetTempPath(), "gill-unused-" + Guid.NewGuid().ToString("N"));
        var ex = Assert.ThrowsExactly<NotSupportedException>(() => new GillTrainer(model, o));
        StringAssert.Contains(ex.Message, "TrainLanguageModel");
        var bad = Options(trainLm: true);
        bad.LanguageModelLearningRate = 0;
        var ex2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new GillTrainingStep(model, bad));
        StringAssert.Contains(ex2.Message, "LanguageModelLearningRate");
    }
}
