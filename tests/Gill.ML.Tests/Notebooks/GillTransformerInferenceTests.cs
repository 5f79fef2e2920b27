using Gill.ML.Inference;
using Gill.ML.Stages;
using Gill.ML.Tests.Stages;
using Gill.ML.Training;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.Tests.Notebooks;

/// <summary><c>ToGillModel</c>: interleaved inference over a GILL stage trained (or loaded) through ML.NET.</summary>
[TestClass]
public sealed class GillTransformerInferenceTests
{
    [TestMethod]
    public void FittedChainBecomesAGillModelOverTheSameParts()
    {
        GillTestThreads.Enter();
        try
        {
            var ml = new MLContext(1);
            using var backbone = StageTestData.Backbone();
            var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(4));
            var chain = ml.Transforms.CopyColumns("CaptionCopy", "Caption").Append(ml.Gill().Trainers.Gill(new Gill.ML.Stages.Joint.GillJointTrainer.Options
            {
                Backbone = backbone, Architecture = StageTestData.Architecture(), MaxSequenceLength = StageTestData.MaxLength,
                BatchSize = 4, MaxSteps = 1, Seed = 17, Training = new GillTrainingOptions { LearningRate = 1e-3, WarmupSteps = 0 },
            })).Fit(data);
            try
            {
                using var gill = chain.ToGillModel();
                Assert.AreSame(chain.LastTransformer.Parts.Core, gill.Core, "the chain's trained heads, not a copy");
                Assert.AreSame(backbone.Tokenizer, gill.Tokenizer);
                Assert.IsNull(gill.VisualEncoder, "neither the stage nor the chain has an encoder");
                using var r = gill.Generate(GillPrompt.Of("a red box"), new GillGenerationOptions { MaxNewTokens = 3, ImageTokenScaleFactor = 1e5, StopAtEos = false });
                Assert.AreEqual(1, r.ImageGroups.Count, "the forced [IMG] group");
                Assert.AreEqual(StageTestData.Architecture().RetEmbDim, r.ImageGroups[0].RetrievalEmbedding.Length);
                using (var direct = chain.LastTransformer.ToGillModel())
                    Assert.AreSame(gill.Core, direct.Core);
            }
            finally
            {
                chain.LastTransformer.Dispose();
            }
            Assert.IsNotNull(backbone.Tokenizer, "the caller's backbone is not disposed by the model");
        }
        finally
        {
            GillTestThreads.Leave();
        }
    }

    [TestMethod]
    public void ModelWithoutAGillStageIsAClearError()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(StageTestData.Rows(2));
        var copy = ml.Transforms.CopyColumns("CaptionCopy", "Caption").Fit(data);
        var e = Assert.ThrowsExactly<ArgumentException>(() => copy.ToGillModel());
        StringAssert.Contains(e.Message, "no GILL stage");
        StringAssert.Contains(e.Message, "ColumnCopyingTransformer");
    }
}
