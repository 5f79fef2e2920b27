using Gill.ML.Evaluation;
using Gill.ML.Evaluation.Fid;
using Gill.ML.Serialization;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Evaluation;

[TestClass]
public class FidInceptionTests
{
    [TestMethod]
    public void StateDictKeysAndShapesMatchTheCheckpoint()
    {
        var dir = Fixtures.SharedDir("fid-inception");
        using var net = new FidInceptionV3();
        using var ck = SafeTensorsCheckpoint.Open(dir);
        var module = net.state_dict().Where(kv => !kv.Key.EndsWith(".num_batches_tracked", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        var stored = ck.Tensors.Where(kv => !kv.Key.StartsWith("fc.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value.Shape);
        CollectionAssert.AreEquivalent(stored.Keys.ToList(), module.Keys.ToList());
        foreach (var (k, s) in stored) CollectionAssert.AreEqual(s, module[k], k);
    }

    [TestMethod]
    public void Pool3MatchesPyTorch()
    {
        var dir = Fixtures.SharedDir("fid-inception");
        var io = SafeTensors.LoadAll(Path.Combine(dir, "io.safetensors"));
        var images = io["images"];
        using var extractor = new MLContext(1).Gill().Evaluation.LoadFidInception(dir);
        var list = Enumerable.Range(0, (int)images.shape[0]).Select(i => images[i]).ToArray();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using var feats = extractor.Extract(list);
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Fixtures.AssertClose(io["pool3"], feats, "pool3");
        Assert.IsTrue(after - before <= 1, $"live tensors grew by {after - before} (only the result should remain)");
    }

    [TestMethod]
    public void ImageFilesStreamIntoStatisticsAndFid()
    {
        var tmp = Directory.CreateTempSubdirectory("gill-fid-img-");
        try
        {
            var a = Directory.CreateDirectory(Path.Combine(tmp.FullName, "a")).FullName;
            var b = Directory.CreateDirectory(Path.Combine(tmp.FullName, "b")).FullName;
            torch.random.manual_seed(5);
            for (int i = 0; i < 3; i++)
            {
                ImageFiles.SavePng(torch.rand(3, 40, 40), Path.Combine(a, $"{i}.png"));
                ImageFiles.SavePng(torch.rand(3, 32, 48), Path.Combine(b, $"{i}.png"));
            }
            var eval = new MLContext(1).Gill().Evaluation;
            // The streaming path with a small stand-in network (the real network's numbers are checked by Pool3MatchesPyTorch).
            torch.random.manual_seed(6);
            var small = nn.Sequential(nn.Conv2d(3, 8, 3, stride: 2), nn.ReLU(), nn.AdaptiveAvgPool2d(new long[] { 1, 1 }), nn.Flatten());
            using var extractor = new FidFeatureExtractor(small, 8, 32, new FidFeatureExtractorOptions { BatchSize = 2 });
            var stats = eval.StatisticsOf(extractor, a);
            Assert.AreEqual(3, stats.Count);
            Assert.AreEqual(8, stats.Dimension);
            var (direct, kept) = extractor.ExtractFromFiles(ImageFiles.List(a), keepFeatures: true);
            Assert.AreEqual(3, kept!.Length);
            var fromKept = FeatureStatistics.FromFeatures(kept);
            Assert.AreEqual(direct.Covariance(1, 2), fromKept.Covariance(1, 2), 1e-6);
            var statsFile = Path.Combine(tmp.FullName, "a.stats");
            stats.Save(statsFile);
            var fromFolder = eval.FidFromFolders(extractor, a, b);
            var fromStats = eval.FidFromFolders(extractor, statsFile, b);
            Assert.AreEqual(fromFolder.Value, fromStats.Value, 1e-9 * (1 + fromFolder.Value));
            Assert.AreEqual(0, eval.FidFromFolders(extractor, a, a).Value, 1e-6 * (1 + fromFolder.Value));
        }
        finally
        {
            tmp.Delete(true);
        }
    }

    [TestMethod]
    public void WrongImagesAreRejectedWithTheirIndex()
    {
        using var extractor = FidFeatureExtractor.CreateRandom(1);
        using var gray = torch.rand(1, 8, 8);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => extractor.Extract(new[] { gray })).Message, "1 channels");
        using var bytes = torch.rand(3, 8, 8) * 255;
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => extractor.Extract(new[] { bytes })).Message, "divide 8-bit pixels by 255");
    }
}
