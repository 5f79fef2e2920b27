using Gill.ML.Evaluation;
using Gill.ML.Evaluation.Demo;
using Gill.ML.Tests.Stages;
using Gill.ML.Stages.Joint;
using Gill.ML.World;
using Gill.ML.World.Pretraining;
using Gill.ML.WorldModels;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Demo;

/// <summary>
/// The whole path on a scaled-down world in the default test run: generate the world, pretrain tiny backbones, train GILL
/// through the ML.NET estimators, save, load the saved model in a fresh context, and infer — asserting that it learned.
/// </summary>
[TestClass]
public sealed class WorldFullPathTests
{
    [TestMethod]
    public void GenerateTrainSaveLoadInferLearnsRetrievalAndGeneration()
    {
        string root = Path.Combine(Path.GetTempPath(), "gill-fullpath-" + Guid.NewGuid().ToString("N"));
        int saved = torch.get_num_threads();
        try
        {
            var options = DemoRunnerTests.Scaled(root, steps: 120);
            var result = DemoRunner.Run(options);
            Assert.AreEqual(saved, torch.get_num_threads(), "the thread setting is restored");

            // A fresh context loads the saved model; the cached world folders are resolved again (no retraining).
            torch.set_num_threads(1);
            var world = WorldPretrainer.Run(options.Pretraining!);
            Assert.AreEqual(0, world.TrainedPhases.Count, "the second pretraining call reuses every cached backbone");
            var test = ShapesWorldDataset.Load(world.WorldFolder).Images(ShapesSplit.Test).Take(30).ToList();
            var ml = new MLContext(seed: 1);
            var model = ml.Gill().Model.Load(result.ModelPath, out _);
            try
            {
                var scored = model.Transform(new DataFrame(
                    new StringDataFrameColumn(GillColumnNames.ImagePath, test.Select(x => x.ImagePath)),
                    new StringDataFrameColumn(GillColumnNames.Caption, test.Select(x => x.Caption))));
                var texts = StageTestData.Column(scored, GillColumnNames.TextRetrievalEmbedding);
                var images = StageTestData.Column(scored, GillColumnNames.ImageRetrievalEmbedding);
                var generation = StageTestData.Column(scored, GillColumnNames.GenerationEmbedding);
                int n = test.Count;

                // Retrieval: the caption's own image within the top 5 of the 30 test images.
                var recall = ml.Gill().Evaluation.RecallAtK(texts, images, Enumerable.Range(0, n).ToArray(), RetrievalDirection.TextToImage,
                    new RecallAtKOptions { Ks = [5], BootstrapResamples = 0 });
                double recall5 = recall.Recall[5], chance5 = 5.0 / n;
                Console.WriteLine($"loaded model: Recall@5 {recall5:F3} (chance {chance5:F3})");
                Assert.IsTrue(recall5 >= 2 * chance5, $"Recall@5 {recall5:F3} of the loaded model is not at least 2× chance {chance5:F3}");

                // Generation: each GILL-generated image is closer (world image tower cosine) to its own caption's image than to the other test images.
                using var generator = WorldImageGenerator.Load(world.GeneratorFolder, world.ClipTextFolder);
                using var encoder = WorldVisualEncoder.Load(world.ImageEncoderFolder);
                using var scope = torch.NewDisposeScope();
                var cond = generator.ConditioningShape;
                var flat = torch.tensor(generation.SelectMany(v => v).ToArray(), new long[] { n, cond.SequenceLength, cond.EmbeddingDim });
                using var generated = generator.Generate(flat);
                var genEmb = DemoRunner.EmbedImages(encoder, Enumerable.Range(0, n).Select(i => generated.Images[i]).ToList());
                var trueEmb = DemoRunner.EmbedImages(encoder, test.Select(x => global::Gill.ML.Generation.ImageTensorIO.Load(x.ImagePath)).ToList());
                var sim = torch.matmul(nn.functional.normalize(genEmb, dim: 1), nn.functional.normalize(trueEmb, dim: 1).t());
                double own2 = sim.diag().mean().item<float>();
                double other = ((sim.sum() - sim.diag().sum()) / (n * (n - 1))).item<float>();
                Console.WriteLine($"generated vs own image cosine {own2:F3}, vs other test images {other:F3}");
                Assert.IsTrue(own2 > other + 0.02, $"generated images are not closer to their own targets ({own2:F3}) than to other test images ({other:F3})");
            }
            finally
            {
                (model as IDisposable)?.Dispose();
            }
        }
        finally
        {
            torch.set_num_threads(saved);
            if (Directory.Exists(root)) Directory.Delete(root, true);
        }
    }
}
