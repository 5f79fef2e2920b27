using Gill.ML.MLNet;
using Gill.ML.Stages.VisualFeatures;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;

namespace Gill.ML.Tests.MLNet;

[TestClass]
public sealed class OnnxVisualEncoderTests
{
    private sealed class PathRow
    {
        public string ImagePath { get; set; } = "";
    }

    private sealed class FeatOut
    {
        [VectorType(512)] public float[] Feat { get; set; } = Array.Empty<float>();
    }

    [TestMethod]
    public void ResNet18PresetMatchesMLNetDnnImageFeaturizerAndBatchingMatchesOneRowAtATime()
    {
        var ml = new MLContext(1);
        using var images = new TestImages(3, 224, 224);
        using var encoder = OnnxVisualEncoder.ResNet18();
        Assert.AreEqual(512, encoder.FeatureSize);
        Assert.IsTrue(encoder.BatchDimensionRewritten, "the single-image model was rewritten to take batches");
        var data = ml.Data.LoadFromEnumerable(images.Paths.Select(p => new PathRow { ImagePath = p }).ToArray());

        using var ours = ml.Gill().ExtractVisualFeatures("Feat", "ImagePath", encoder, batchSize: 2).Fit(data);
        var batched = ours.Transform(data).GetColumn<float[]>("Feat").ToArray();
        Assert.AreEqual(2, ours.BatchCalls);
        Assert.AreEqual(512, batched[0].Length);

        // ML.NET's own DnnImageFeaturizer (ResNet-18) on the same 224×224 images.
        var reference = ml.Transforms.LoadImages("Img", null, "ImagePath")
            .Append(ml.Transforms.ResizeImages("Img", 224, 224, "Img"))
            .Append(ml.Transforms.ExtractPixels("Pixels", "Img"))
            .Append(ml.Transforms.DnnFeaturizeImage("RN", m => m.ModelSelector.ResNet18(ml, m.OutputColumn, m.InputColumn), "Pixels"));
        using var refModel = reference.Fit(data);
        var expected = refModel.Transform(data).GetColumn<float[]>("RN").ToArray();
        for (int i = 0; i < expected.Length; i++)
        {
            using var e = torch.tensor(expected[i]);
            using var a = torch.tensor(batched[i]);
            Fixtures.AssertClose(e, a, $"ResNet-18 features of image {i} vs ML.NET DnnFeaturizeImage");
        }
        Assert.IsTrue(batched[0].Zip(batched[1]).Any(p => Math.Abs(p.First - p.Second) > 1e-3), "different images give different features");

        using var engine = ml.Model.CreatePredictionEngine<PathRow, FeatOut>(ours);
        for (int i = 0; i < images.Paths.Count; i++)
        {
            var one = engine.Predict(new PathRow { ImagePath = images.Paths[i] }).Feat;
            using var e = torch.tensor(batched[i]);
            using var a = torch.tensor(one);
            Fixtures.AssertClose(e, a, $"image {i}: batch of 2 vs one row");
        }
    }

    [TestMethod]
    public void ResNet18ResizesOtherImageSizesAndRoundTripsThroughGillSave()
    {
        var ml = new MLContext(1);
        using var images = new TestImages(3, 300, 200, "jpg");
        var data = ml.Data.LoadFromEnumerable(images.Paths.Select(p => new PathRow { ImagePath = p }).ToArray());
        using var encoder = OnnxVisualEncoder.ResNet18();
        using var model = ml.Gill().ExtractVisualFeatures("Feat", "ImagePath", encoder, 8).Fit(data);
        var before = model.Transform(data).GetColumn<float[]>("Feat").ToArray();
        var path = Path.Combine(images.Folder, "resnet.zip");
        ml.Gill().Model.Save(model, data.Schema, path);
        var loaded = ml.Gill().Model.Load(path, out _);
        var after = loaded.Transform(data).GetColumn<float[]>("Feat").ToArray();
        for (int i = 0; i < before.Length; i++) CollectionAssert.AreEqual(before[i], after[i], $"image {i}");
        (loaded as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void MissingModelFileAndWrongOutputNameAreClear()
    {
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => OnnxVisualEncoder.ResNet18("/nonexistent/DnnImageModels"));
        StringAssert.Contains(e.Message, "ResNet18.onnx");
        var folder = Path.Combine(AppContext.BaseDirectory, "DnnImageModels");
        var e2 = Assert.ThrowsExactly<ArgumentException>(() => new OnnxVisualEncoder(new OnnxVisualEncoder.Options
        {
            ModelPath = Path.Combine(folder, "ResNet18Onnx", "ResNet18.onnx"), OutputName = "nope",
        }));
        StringAssert.Contains(e2.Message, "'nope'");
        StringAssert.Contains(e2.Message, "Pooling395_Output_0");
    }
}
