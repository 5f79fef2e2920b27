using Gill.ML.Imaging;
using Gill.ML.Modules.Clip;
using Gill.ML.Stages.GenerationTargets;
using Gill.ML.Stages.VisualFeatures;
using Gill.ML.Tests.MLNet;
using Gill.ML.Tokenization;
using Microsoft.ML;
using TorchSharp;

namespace Gill.ML.Tests.Stages;

[TestClass]
public class FrozenStageTests
{
    private sealed class PathRow
    {
        public string ImagePath { get; set; } = "";
    }

    private sealed class CaptionRow
    {
        public string Caption { get; set; } = "";
    }

    [TestMethod]
    public void ClipVisualEncoderGivesPooledOutputAndImageEmbedsAndReloads()
    {
        var ml = new MLContext(1);
        using var images = new TestImages(3);
        using var clip = new ClipVisualEncoder(Fixtures.Dir("clip-vision-tiny"));
        Assert.AreEqual(32, clip.FeatureSize);
        Assert.AreEqual(16, clip.EmbeddingSize);
        var data = ml.Data.LoadFromEnumerable(images.Paths.Select(p => new PathRow { ImagePath = p }).ToList());
        var stage = ml.Gill().ExtractVisualFeatures(new VisualFeatureExtractionEstimator.Options
        {
            Encoder = clip, InputColumnName = "ImagePath", EmbeddingColumnName = GillColumnNames.ClipImageEmbedding, BatchSize = 2,
        }).Fit(data);
        var output = stage.Transform(data);
        var features = StageTestData.Column(output, GillColumnNames.ClipPooledFeatures);
        Assert.AreEqual(2, clip.ForwardCalls, "3 rows in batches of 2");
        var embeds = StageTestData.Column(output, GillColumnNames.ClipImageEmbedding);

        using (torch.NewDisposeScope())
        {
            var pixels = clip.Encoder.Preprocessor.Preprocess(images.Paths.Select(RgbImage.FromFile).ToList());
            using var direct = clip.Encoder.Forward(pixels);
            var pooled = direct.PooledFeatures.data<float>().ToArray();
            var projected = direct.ImageEmbeddings!.data<float>().ToArray();
            for (int i = 0; i < 3; i++)
            {
                Fixtures.AssertClose(torch.tensor(pooled.AsSpan(i * 32, 32).ToArray()), torch.tensor(features[i]), $"pooler_output row {i}");
                Fixtures.AssertClose(torch.tensor(projected.AsSpan(i * 16, 16).ToArray()), torch.tensor(embeds[i]), $"image_embeds row {i}");
            }
        }

        var path = Path.Combine(StageTestData.NewDir("clip"), "features.zip");
        ml.Gill().Model.Save(stage, data.Schema, path);
        var loaded = ml.Gill().Model.Load(path, out _);
        try
        {
            var again = loaded.Transform(data);
            StageTestData.AssertSame(features, StageTestData.Column(again, GillColumnNames.ClipPooledFeatures), "features after reload");
            var visual = ((IEnumerable<ITransformer>)loaded).OfType<VisualFeatureExtractionTransformer>().Single();
            Assert.IsInstanceOfType<ClipVisualEncoder>(visual.Encoder);
        }
        finally
        {
            (loaded as IDisposable)?.Dispose();
        }
    }

    [TestMethod]
    public void UnreadableImageNamesTheColumnAndFile()
    {
        var ml = new MLContext(1);
        using var clip = new ClipVisualEncoder(Fixtures.Dir("clip-vision-tiny"));
        var bad = Path.Combine(StageTestData.NewDir("bad-image"), "not-an-image.png");
        File.WriteAllText(bad, "this is text");
        var data = ml.Data.LoadFromEnumerable(new[] { new PathRow { ImagePath = bad } });
        var stage = ml.Gill().ExtractVisualFeatures(GillColumnNames.ClipPooledFeatures, "ImagePath", clip).Fit(data);
        var e = Assert.Throws<InvalidDataException>(() => StageTestData.Column(stage.Transform(data), GillColumnNames.ClipPooledFeatures));
        StringAssert.Contains(e.Message, "ImagePath");
        StringAssert.Contains(e.Message, "not-an-image.png");
    }

    [TestMethod]
    public void GenerationTargetsMatchTheTextEncoderAndAreCached()
    {
        var ml = new MLContext(1);
        var folder = StageTestData.ClipTextFolder;
        var cache = StageTestData.NewDir("target-cache");
        var captions = new[] { "red box", "a cat", "red box", "blue dot", "" };
        var data = ml.Data.LoadFromEnumerable(captions.Select(c => new CaptionRow { Caption = c }).ToList());
        var estimator = ml.Gill().ComputeGenerationTargets(folder, sequenceLength: StageTestData.TargetTokens, cacheFolder: cache);
        List<float[]> first;
        using (var t1 = estimator.Fit(data))
        {
            first = StageTestData.Column(t1.Transform(data), GillColumnNames.GenerationTarget);
            Assert.AreEqual(5, t1.EncodedCaptions);
            Assert.AreEqual(0, t1.CacheHits);
        }
        Assert.AreEqual(4, Directory.GetFiles(cache, "*.f32", SearchOption.AllDirectories).Length, "one file per distinct caption");
        Assert.AreEqual(0, Directory.GetFiles(cache, "*.tmp", SearchOption.AllDirectories).Length, "no temporary files left");
        using (var t2 = estimator.Fit(data))
        {
            var second = StageTestData.Column(t2.Transform(data), GillColumnNames.GenerationTarget);
            Assert.AreEqual(0, t2.EncodedCaptions, "the second run reads everything from the cache");
            Assert.AreEqual(5, t2.CacheHits);
            StageTestData.AssertSame(first, second, "cached targets");
        }

        using var encoder = ClipTextEncoder.Load(folder);
        var tokenizer = ClipTokenizer.FromFolder(folder, new ClipTokenizerOptions { ModelMaxLength = StageTestData.TargetTokens });
        using var scope = torch.NewDisposeScope();
        var ids = tokenizer.EncodeBatch(captions, new BatchEncodingOptions { Padding = PaddingStrategy.MaxLength, MaxLength = StageTestData.TargetTokens, Truncation = true });
        var expected = encoder.GetLastHiddenState(ids.InputIdsTensor());
        Assert.AreEqual(StageTestData.TargetTokens * StageTestData.TargetWidth, first[0].Length);
        for (int i = 0; i < captions.Length; i++)
            Fixtures.AssertClose(expected[i].flatten(), torch.tensor(first[i]), $"target of '{captions[i]}'");
        // Pad positions after EOS are targets too (Stable Diffusion conditions on all L vectors): they are not zero.
        Assert.IsTrue(first[1].Skip((StageTestData.TargetTokens - 1) * StageTestData.TargetWidth).Any(v => v != 0));
    }
}
