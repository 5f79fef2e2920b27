using System.IO.Compression;
using System.Text.Json.Nodes;
using Gill.ML.Persistence;
using Gill.ML.Serialization;
using Gill.ML.Stages.VisualFeatures;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.Tests.MLNet;

[TestClass]
public sealed class GillModelSaveLoadTests
{
    private sealed class Row
    {
        public string ImagePath { get; set; } = "";
        [VectorType(4)] public float[] Vec { get; set; } = Array.Empty<float>();
    }

    private static (MLContext ml, IDataView data, EstimatorChain<Microsoft.ML.Transforms.ColumnCopyingTransformer> pipeline, MeanColourEncoder enc) Build(TestImages images)
    {
        MeanColourEncoder.EnsureRegistered();
        var ml = new MLContext(7);
        var data = ml.Data.LoadFromEnumerable(images.Paths.Select((p, i) => new Row { ImagePath = p, Vec = new float[] { i - 2, 1, 0.5f * i, -1 } }).ToArray());
        var enc = new MeanColourEncoder(MeanColourEncoder.WriteWeights(images.Folder, 0.5f, 1, 2));
        var pipeline = ml.Transforms.CopyColumns("Vec2", "Vec")
            .Append(ml.Gill().ExtractVisualFeatures(new VisualFeatureExtractionEstimator.Options
            {
                Encoder = enc, InputColumnName = "ImagePath", OutputColumnName = "Feat", EmbeddingColumnName = "Emb", BatchSize = 3,
            }))
            .Append(ml.Transforms.Concatenate("Features", "Feat", "Vec2"))
            .Append(ml.Transforms.NormalizeMinMax("Features"))
            .Append(new AffineTestEstimator(ml, "Vec2", new float[] { 0.5f, -1, 2, 3 }, 2))
            .Append(ml.Transforms.CopyColumns("Out2", "Out"));
        return (ml, data, pipeline, enc);
    }

    private static void AssertSameOutputs(IDataView a, IDataView b)
    {
        foreach (var col in new[] { "Feat", "Emb", "Features", "Out", "Out2" })
        {
            var x = a.GetColumn<float[]>(col).ToArray();
            var y = b.GetColumn<float[]>(col).ToArray();
            Assert.AreEqual(x.Length, y.Length, col);
            for (int i = 0; i < x.Length; i++) CollectionAssert.AreEqual(x[i], y[i], $"{col} row {i}");
        }
        CollectionAssert.AreEqual(a.GetColumn<uint>(GillColumnNames.Decision).ToArray(), b.GetColumn<uint>(GillColumnNames.Decision).ToArray());
        CollectionAssert.AreEqual(a.GetColumn<string>("Sign").ToArray(), b.GetColumn<string>("Sign").ToArray());
    }

    [TestMethod]
    public void SaveLoadRoundTripOfAMixedChainReproducesOutputs()
    {
        using var images = new TestImages(5);
        var (ml, data, pipeline, _) = Build(images);
        var model = pipeline.Fit(data);
        var path = Path.Combine(images.Folder, "model.zip");
        ml.Gill().Model.Save(model, data.Schema, path);
        Assert.AreEqual(0, Directory.GetFiles(images.Folder, "*.tmp").Length, "no temporary file is left behind");

        using (var zip = ZipFile.OpenRead(path))
        {
            var names = zip.Entries.Select(e => e.FullName).ToHashSet();
            Assert.IsTrue(names.Contains("Gill/model.json"));
            Assert.IsTrue(names.Contains("Gill/1-VisualFeatures/manifest.json"));
            Assert.IsTrue(names.Contains("Gill/2-MLNet/model.zip"));
            Assert.IsTrue(names.Contains("Gill/3-TestAffine/manifest.json"));
            Assert.IsTrue(names.Contains("Gill/3-TestAffine/weights.safetensors"));
            Assert.IsTrue(names.Contains("Gill/4-MLNet/model.zip"));
            using var s = zip.GetEntry("Gill/1-VisualFeatures/manifest.json")!.Open();
            var manifest = JsonNode.Parse(s)!;
            Assert.AreEqual("VisualFeatures", manifest["stage"]!.GetValue<string>());
            Assert.AreEqual(typeof(VisualFeatureExtractionTransformer).FullName, manifest["type"]!.GetValue<string>());
            Assert.AreEqual(1, manifest["formatVersion"]!.GetValue<int>());
            Assert.AreEqual(64, manifest["backbones"]![0]!["sha256"]!.GetValue<string>().Length);
            Assert.AreEqual("Feat", manifest["columns"]!["outputs"]![0]!["name"]!.GetValue<string>());
        }

        var loaded = ml.Gill().Model.Load(path, out var schema);
        Assert.AreEqual(data.Schema.Count, schema.Count);
        Assert.IsNotNull(schema.GetColumnOrNull("ImagePath"));
        Assert.AreEqual(6, ((IEnumerable<ITransformer>)loaded).Count());
        AssertSameOutputs(model.Transform(data), loaded.Transform(data));
        (loaded as IDisposable)?.Dispose();
        model.Dispose();
    }

    [TestMethod]
    public void PlainMLNetLoadOfAGillModelFailsNamingTheGillCall()
    {
        using var images = new TestImages(3);
        var (ml, data, pipeline, _) = Build(images);
        using var model = pipeline.Fit(data);
        var path = Path.Combine(images.Folder, "model.zip");
        ml.Gill().Model.Save(model, data.Schema, path);
        var e = Assert.Throws<Exception>(() => ml.Model.Load(path, out _));
        var all = string.Join(" | ", Chain(e).Select(x => x.Message));
        StringAssert.Contains(all, "mlContext.Gill().Model.Load");

        // The ML.NET part before the first Gill stage is still an ordinary ML.NET model inside the file.
        using var zip = System.IO.Compression.ZipFile.OpenRead(path);
        using var prefixStream = new MemoryStream();
        using (var s = zip.GetEntry("Gill/0-MLNet/model.zip")!.Open()) s.CopyTo(prefixStream);
        prefixStream.Position = 0;
        var prefix = ml.Model.Load(prefixStream, out var schema);
        Assert.IsNotNull(schema.GetColumnOrNull("Vec"));
        var output = prefix.Transform(data);
        CollectionAssert.AreEqual(data.GetColumn<float[]>("Vec").First(), output.GetColumn<float[]>("Vec2").First());
        Assert.IsNull(output.Schema.GetColumnOrNull("Feat"), "the ML.NET part ends before the first Gill stage");
    }

    [TestMethod]
    public void PlainMLNetSaveOfAChainWithAGillStageFailsNamingTheGillCall()
    {
        using var images = new TestImages(2);
        var (ml, data, pipeline, _) = Build(images);
        using var model = pipeline.Fit(data);
        var path = Path.Combine(images.Folder, "plain.zip");
        var e = Assert.Throws<Exception>(() => ml.Model.Save(model, data.Schema, path));
        var all = string.Join(" | ", Chain(e).Select(x => x.Message));
        StringAssert.Contains(all, "mlContext.Gill().Model.Save");
        Assert.IsTrue(Chain(e).Any(x => x is NotSupportedException), all);
    }

    private static IEnumerable<Exception> Chain(Exception? e)
    {
        for (; e is not null; e = e.InnerException) yield return e;
    }

    [TestMethod]
    public void BackboneHashMismatchFailsUnlessAllowedWithAWarning()
    {
        using var images = new TestImages(3);
        var (ml, data, pipeline, enc) = Build(images);
        using var model = pipeline.Fit(data);
        var path = Path.Combine(images.Folder, "model.zip");
        ml.Gill().Model.Save(model, data.Schema, path);

        MeanColourEncoder.WriteWeights(images.Folder, 9, 9, 9);
        File.SetLastWriteTimeUtc(enc.WeightsFile, DateTime.UtcNow.AddMinutes(1));
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ml.Gill().Model.Load(path, out _));
        StringAssert.Contains(e.Message, "SHA-256");
        StringAssert.Contains(e.Message, "weights");
        StringAssert.Contains(e.Message, "AllowBackboneMismatch");

        var log = new List<string>();
        ml.Log += (_, ev) => { lock (log) log.Add(ev.Message); };
        var loaded = ml.Gill().Model.Load(path, out _, new GillModelLoadOptions { AllowBackboneMismatch = true });
        Assert.IsTrue(log.Any(m => m.Contains("SHA-256") && m.Contains("AllowBackboneMismatch")), string.Join("\n", log));
        var feat = loaded.Transform(data).GetColumn<float[]>("Feat").First();
        Assert.AreEqual(9f, feat[1] / model.Transform(data).GetColumn<float[]>("Feat").First()[1], 1e-4, "loaded with the changed backbone");
        (loaded as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void MovedBackboneIsFoundThroughBackbonePaths()
    {
        using var images = new TestImages(3);
        var (ml, data, pipeline, enc) = Build(images);
        using var model = pipeline.Fit(data);
        var path = Path.Combine(images.Folder, "model.zip");
        ml.Gill().Model.Save(model, data.Schema, path);
        var moved = Path.Combine(images.Folder, "moved.json");
        File.Move(enc.WeightsFile, moved);
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => ml.Gill().Model.Load(path, out _));
        StringAssert.Contains(e.Message, "BackbonePaths");
        var options = new GillModelLoadOptions();
        options.BackbonePaths["weights"] = moved;
        var loaded = ml.Gill().Model.Load(path, out _, options);
        AssertSameOutputs(model.Transform(data), loaded.Transform(data));
        (loaded as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void SaveReplacesAnExistingFileAndAModelWithoutGillStagesLoadsToo()
    {
        using var images = new TestImages(2);
        var (ml, data, _, _) = Build(images);
        var path = Path.Combine(images.Folder, "model.zip");
        File.WriteAllText(path, "old content");
        using var plain = ml.Transforms.CopyColumns("Vec2", "Vec").Append(ml.Transforms.NormalizeMinMax("Vec2")).Fit(data);
        ml.Gill().Model.Save(plain, data.Schema, path);
        var loaded = ml.Gill().Model.Load(path, out _);
        CollectionAssert.AreEqual(plain.Transform(data).GetColumn<float[]>("Vec2").First(), loaded.Transform(data).GetColumn<float[]>("Vec2").First());
        var byMLNet = ml.Model.Load(path, out _);   // without Gill stages the file is a plain ML.NET model
        CollectionAssert.AreEqual(plain.Transform(data).GetColumn<float[]>("Vec2").First(), byMLNet.Transform(data).GetColumn<float[]>("Vec2").First());
        Assert.AreEqual(0, Directory.GetFiles(images.Folder, "*.tmp").Length);
    }
}
