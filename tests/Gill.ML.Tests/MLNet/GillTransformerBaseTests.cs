using Gill.ML.MLNet;
using Gill.ML.Stages.VisualFeatures;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using SkiaSharp;
using TorchSharp;

namespace Gill.ML.Tests.MLNet;

[TestClass]
public sealed class GillTransformerBaseTests
{
    private sealed class VecRow
    {
        [VectorType(4)] public float[] Vec = Array.Empty<float>();
        public string Name = "";
    }

    private sealed class PathRow
    {
        public string ImagePath = "";
        public string Caption = "";
    }

    private sealed class FeatureOut
    {
        [VectorType(5)] public float[] Feat = Array.Empty<float>();
        [VectorType(2)] public float[] Emb = Array.Empty<float>();
    }

    private static VecRow[] Rows(int n) => Enumerable.Range(0, n)
        .Select(i => new VecRow { Vec = new float[] { i - 3, 0.5f * i, -1, 2 }, Name = "r" + i }).ToArray();

    private static float[] W => new float[] { 1, 2, 3, 4 };

    [TestMethod]
    public void SchemaPropagatesThroughEstimatorChainWithMLNetTransformsBeforeAndAfter()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(Rows(6));
        var pipeline = ml.Transforms.CopyColumns("Vec2", "Vec")
            .Append(new AffineTestEstimator(ml, "Vec2", W, 4))
            .Append(ml.Transforms.Concatenate("Features", "Out", "Vec"))
            .Append(ml.Transforms.NormalizeMinMax("Features"));

        var shape = pipeline.GetOutputSchema(GillSchemaShape.FromSchema(ml, data.Schema));
        var outCol = shape.Single(c => c.Name == "Out");
        Assert.AreEqual(SchemaShape.Column.VectorKind.Vector, outCol.Kind);
        Assert.AreEqual(NumberDataViewType.Single, outCol.ItemType);
        Assert.IsTrue(shape.Single(c => c.Name == GillColumnNames.Decision).IsKey);
        Assert.AreEqual(SchemaShape.Column.VectorKind.Vector, shape.Single(c => c.Name == "Features").Kind);
        Assert.AreEqual(TextDataViewType.Instance, shape.Single(c => c.Name == "Sign").ItemType);

        using var model = pipeline.Fit(data);
        var output = model.Transform(data);
        var outType = (VectorDataViewType)output.Schema["Out"].Type;
        CollectionAssert.AreEqual(new[] { 2, 2 }, outType.Dimensions.ToArray());
        Assert.AreEqual(8, ((VectorDataViewType)output.Schema["Features"].Type).Size);
        var x = output.GetColumn<VBuffer<float>>("Out").Select(v => v.DenseValues().ToArray()).ToArray();
        CollectionAssert.AreEqual(new float[] { -3, 0, -3, 8 }, x[0]);
        CollectionAssert.AreEqual(new float[] { 2, 5, -3, 8 }, x[5]);
        CollectionAssert.AreEqual(new[] { false, false, true, true, true, true }, output.GetColumn<bool>("Positive").ToArray());
        CollectionAssert.AreEqual(new[] { "neg", "neg", "pos", "pos", "pos", "pos" }, output.GetColumn<string>("Sign").ToArray());
        CollectionAssert.AreEqual(new uint[] { 2, 2, 1, 1, 1, 1 }, output.GetColumn<uint>(GillColumnNames.Decision).ToArray());
        CollectionAssert.AreEqual(Rows(6).Select(r => r.Name).ToArray(), output.GetColumn<string>("Name").ToArray());
    }

    [TestMethod]
    public void SeedsComeFromTheContextSeedAndMessagesReachTheLog()
    {
        int Draw(int contextSeed) => new AffineTestEstimator(new MLContext(contextSeed), "Vec", W, 2).Seed(null);
        Assert.AreEqual(Draw(5), Draw(5));
        Assert.AreNotEqual(Draw(5), Draw(6));
        var ml = new MLContext(1);
        var est = new AffineTestEstimator(ml, "Vec", W, 2);
        Assert.AreEqual(42, est.Seed(42));
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        est.Log("hello from a stage");
        Assert.IsTrue(log.Any(m => m.Contains("hello from a stage")), string.Join("\n", log));
    }

    [TestMethod]
    public void MissingColumnIsNamed()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(Rows(2));
        var est = new AffineTestEstimator(ml, "Nope", W, 2);
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => est.Fit(data));
        StringAssert.Contains(e.Message, "'Nope'");
        StringAssert.Contains(e.Message, "not found");
        Assert.AreEqual(0, est.FitCalls, "Fit must check the schema before building anything");
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => est.GetOutputSchema(GillSchemaShape.FromSchema(ml, data.Schema)));
        StringAssert.Contains(e2.Message, "'Nope'");
        using var t = new AffineTestTransformer(ml, "Nope", W, 2);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => t.Transform(data));
    }

    private sealed class ShortVecRow
    {
        [VectorType(3)] public float[] Vec = Array.Empty<float>();
        public float Scalar { get; set; }
    }

    [TestMethod]
    public void WrongVectorSizeAndWrongTypeAreNamed()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(new[] { new ShortVecRow { Vec = new float[3] } });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new AffineTestEstimator(ml, "Vec", W, 2).Fit(data));
        StringAssert.Contains(e.Message, "'Vec'");
        StringAssert.Contains(e.Message, "Vector<Single, 3>");
        StringAssert.Contains(e.Message, "expected Vector<Single, 2, 2>".Replace("2, 2", "4"));
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new AffineTestEstimator(ml, "Scalar", W, 2).Fit(data));
        StringAssert.Contains(e2.Message, "'Scalar'");
        StringAssert.Contains(e2.Message, "Single");
        var e3 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            new AffineTestEstimator(ml, "Scalar", W, 2).GetOutputSchema(GillSchemaShape.FromSchema(ml, data.Schema)));
        StringAssert.Contains(e3.Message, "'Scalar'");

        // an image stage on a float column
        using var images = new TestImages(1);
        var enc = new MeanColourEncoder(MeanColourEncoder.WriteWeights(images.Folder, 1, 1, 1));
        var e4 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Gill().ExtractVisualFeatures("F", "Scalar", enc).Fit(data));
        StringAssert.Contains(e4.Message, "'Scalar'");
        StringAssert.Contains(e4.Message, "Image");
    }

    [TestMethod]
    public void TransformRunsOneCallPerBatchAndIsLazy()
    {
        var ml = new MLContext(1);
        using var images = new TestImages(10);
        var enc = new MeanColourEncoder(MeanColourEncoder.WriteWeights(images.Folder, 1, 2, 3));
        var data = ml.Data.LoadFromEnumerable(images.Paths.Select(p => new PathRow { ImagePath = p, Caption = Path.GetFileName(p) }));
        using var t = ml.Gill().ExtractVisualFeatures(new VisualFeatureExtractionEstimator.Options
        {
            Encoder = enc, OutputColumnName = "Feat", InputColumnName = "ImagePath", EmbeddingColumnName = "Emb", BatchSize = 4,
        }).Fit(data);
        Assert.AreEqual(0, enc.Calls.Count, "Fit of a frozen stage runs no encoder call");
        var output = t.Transform(data);
        Assert.AreEqual(0, enc.Calls.Count, "Transform is lazy");

        // reading only a pass-through column makes no encoder call
        CollectionAssert.AreEqual(images.Paths.Select(Path.GetFileName).ToArray(), output.GetColumn<string>("Caption").ToArray());
        Assert.AreEqual(0, enc.Calls.Count);

        using (var cursor = output.GetRowCursor(output.Schema))
        {
            var feat = cursor.GetGetter<VBuffer<float>>(output.Schema["Feat"]);
            var emb = cursor.GetGetter<VBuffer<float>>(output.Schema["Emb"]);
            var cap = cursor.GetGetter<ReadOnlyMemory<char>>(output.Schema["Caption"]);
            int row = 0;
            VBuffer<float> f = default, e = default;
            ReadOnlyMemory<char> c = default;
            while (cursor.MoveNext())
            {
                feat(ref f);
                emb(ref e);
                cap(ref c);
                using var bmp = SKBitmap.Decode(images.Paths[row]);
                var expected = MeanColourEncoder.Compute(bmp, new float[] { 1, 2, 3 });
                CollectionAssert.AreEqual(expected, f.DenseValues().ToArray(), $"row {row}");
                Assert.AreEqual((expected[0] + expected[1] + expected[2]) / 3, e.GetValues()[0], 1e-6);
                Assert.AreEqual(Path.GetFileName(images.Paths[row]), c.ToString());
                Assert.AreEqual(row, cursor.Position);
                row++;
            }
            Assert.AreEqual(10, row);
        }
        CollectionAssert.AreEqual(new[] { 4, 4, 2 }, enc.Calls, "one encoder call per batch of 4 (feature and embedding share it)");
        Assert.AreEqual(3, t.BatchCalls);
    }

    [TestMethod]
    public void PredictionEngineRunsOneCallPerRowAndSharesItAcrossOutputs()
    {
        var ml = new MLContext(1);
        using var images = new TestImages(3);
        var enc = new MeanColourEncoder(MeanColourEncoder.WriteWeights(images.Folder, 1, 1, 1));
        var data = ml.Data.LoadFromEnumerable(new[] { new PathRow { ImagePath = images.Paths[0] } });
        using var t = ml.Gill().ExtractVisualFeatures(new VisualFeatureExtractionEstimator.Options
        {
            Encoder = enc, OutputColumnName = "Feat", InputColumnName = "ImagePath", EmbeddingColumnName = "Emb",
        }).Fit(data);
        using var engine = ml.Model.CreatePredictionEngine<PathRow, FeatureOut>(t);
        for (int i = 0; i < 3; i++)
        {
            var p = engine.Predict(new PathRow { ImagePath = images.Paths[i] });
            using var bmp = SKBitmap.Decode(images.Paths[i]);
            var expected = MeanColourEncoder.Compute(bmp, new float[] { 1, 1, 1 });
            CollectionAssert.AreEqual(expected, p.Feat, $"image {i}");
            Assert.AreEqual(expected[0] - expected[2], p.Emb[1], 1e-6);
        }
        CollectionAssert.AreEqual(new[] { 1, 1, 1 }, enc.Calls);
    }

    private sealed class VecOut
    {
        [VectorType(2, 2)] public float[] Out = Array.Empty<float>();
        public float Sum { get; set; }
        public bool Positive { get; set; }
        public string Sign { get; set; } = "";
        [KeyType(2)] public uint Decision { get; set; }
    }

    [TestMethod]
    public void PredictionEngineThroughAChainWithMLNetTransforms()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(Rows(4));
        using var model = ml.Transforms.CopyColumns("Vec2", "Vec").Append(new AffineTestEstimator(ml, "Vec2", W, 8)).Fit(data);
        using var engine = ml.Model.CreatePredictionEngine<VecRow, VecOut>(model);
        var p = engine.Predict(new VecRow { Vec = new float[] { 1, 1, 1, 1 } });
        CollectionAssert.AreEqual(new float[] { 1, 2, 3, 4 }, p.Out);
        Assert.AreEqual(4f, p.Sum);
        Assert.IsTrue(p.Positive);
        Assert.AreEqual("pos", p.Sign);
        Assert.AreEqual(1u, p.Decision);
        p = engine.Predict(new VecRow { Vec = new float[] { -1, 0, 0, 0 } });
        CollectionAssert.AreEqual(new float[] { -1, 0, 0, 0 }, p.Out);
        Assert.AreEqual("neg", p.Sign);
        Assert.AreEqual(2u, p.Decision);
    }

    [TestMethod]
    public void UnreadableAndMissingImagesAreNamed()
    {
        var ml = new MLContext(1);
        using var images = new TestImages(2);
        var bad = Path.Combine(images.Folder, "broken.png");
        File.WriteAllText(bad, "this is not an image");
        var missing = Path.Combine(images.Folder, "missing.png");
        var enc = new MeanColourEncoder(MeanColourEncoder.WriteWeights(images.Folder, 1, 1, 1));
        using var t = ml.Gill().ExtractVisualFeatures("Feat", "ImagePath", enc, 4).Fit(ml.Data.LoadFromEnumerable(new[] { new PathRow() }));

        var e = Assert.ThrowsExactly<InvalidDataException>(() =>
            t.Transform(ml.Data.LoadFromEnumerable(new[] { images.Paths[0], bad }.Select(p => new PathRow { ImagePath = p }))).GetColumn<float[]>("Feat").ToList());
        StringAssert.Contains(e.Message, "broken.png");
        StringAssert.Contains(e.Message, "'ImagePath'");
        StringAssert.Contains(e.Message, "row 1");

        var e2 = Assert.ThrowsExactly<FileNotFoundException>(() =>
            t.Transform(ml.Data.LoadFromEnumerable(new[] { new PathRow { ImagePath = missing } })).GetColumn<float[]>("Feat").ToList());
        StringAssert.Contains(e2.Message, "missing.png");
    }

    [TestMethod]
    public void MLImageColumnFromLoadImagesWorksAndMatchesPathInput()
    {
        var ml = new MLContext(1);
        using var images = new TestImages(5);
        var enc = new MeanColourEncoder(MeanColourEncoder.WriteWeights(images.Folder, 1, 1, 1));
        var data = ml.Data.LoadFromEnumerable(images.Paths.Select(p => new PathRow { ImagePath = Path.GetFileName(p) }));
        var pipeline = ml.Transforms.LoadImages(GillColumnNames.Image, images.Folder, "ImagePath")
            .Append(ml.Gill().ExtractVisualFeatures("FromImage", GillColumnNames.Image, enc, 2))
            .Append(ml.Gill().ExtractVisualFeatures(new VisualFeatureExtractionEstimator.Options
            {
                Encoder = enc, InputColumnName = "ImagePath", OutputColumnName = "FromPath", ImageFolder = images.Folder, BatchSize = 3,
            }));
        using var model = pipeline.Fit(data);
        var output = model.Transform(data);
        var a = output.GetColumn<float[]>("FromImage").ToArray();
        var b = output.GetColumn<float[]>("FromPath").ToArray();
        Assert.AreEqual(5, a.Length);
        for (int i = 0; i < a.Length; i++) CollectionAssert.AreEqual(b[i], a[i], $"row {i}");
    }

    [TestMethod]
    public void DisposeScopeLiveTensorsDoNotGrowAndCancellationStops()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(Rows(40));
        using var t = new AffineTestTransformer(ml, "Vec", W, 8);
        t.Transform(data).GetColumn<float[]>("Out").ToList();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int k = 0; k < 3; k++) t.Transform(data).GetColumn<float[]>("Out").ToList();
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount, "tensors leaked by batched transform");

        using var cts = new CancellationTokenSource();
        cts.Cancel();
        t.CancellationToken = cts.Token;
        Assert.ThrowsExactly<OperationCanceledException>(() => t.Transform(data).GetColumn<float[]>("Out").ToList());
    }

    [TestMethod]
    public void DataFrameOfPathsAndCaptionsIsAnInputAndOutputsConvertBack()
    {
        var ml = new MLContext(1);
        using var images = new TestImages(4);
        var enc = new MeanColourEncoder(MeanColourEncoder.WriteWeights(images.Folder, 1, 1, 1));
        var df = new DataFrame(
            new StringDataFrameColumn(GillColumnNames.ImagePath, images.Paths),
            new StringDataFrameColumn(GillColumnNames.Caption, images.Paths.Select((_, i) => $"caption {i}")));
        using var t = ml.Gill().ExtractVisualFeatures(new VisualFeatureExtractionEstimator.Options
        {
            Encoder = enc, InputColumnName = GillColumnNames.ImagePath, OutputColumnName = GillColumnNames.ClipPooledFeatures,
            EmbeddingColumnName = GillColumnNames.ClipImageEmbedding, BatchSize = 3,
        }).Fit(df);
        var output = t.Transform(df);
        var result = GillDataFrame.ToDataFrame(output);
        Assert.AreEqual(4, result.Rows.Count);
        CollectionAssert.AreEqual(new[] { GillColumnNames.ImagePath, GillColumnNames.Caption, GillColumnNames.ClipPooledFeatures, GillColumnNames.ClipImageEmbedding },
            result.Columns.Select(c => c.Name).ToArray());
        var feats = (VBufferDataFrameColumn<float>)result[GillColumnNames.ClipPooledFeatures];
        using var bmp = SKBitmap.Decode(images.Paths[2]);
        CollectionAssert.AreEqual(MeanColourEncoder.Compute(bmp, new float[] { 1, 1, 1 }), feats[2].DenseValues().ToArray());
        Assert.AreEqual("caption 3", result[GillColumnNames.Caption][3]);

        var expanded = GillDataFrame.ToDataFrame(output, maxRows: 2, expandVectors: true, columns: new[] { GillColumnNames.ClipImageEmbedding });
        Assert.AreEqual(2, expanded.Rows.Count);
        CollectionAssert.AreEqual(new[] { "ClipImageEmbedding[0]", "ClipImageEmbedding[1]" }, expanded.Columns.Select(c => c.Name).ToArray());

        // key columns with value names come back as text
        var keyed = new AffineTestTransformer(ml, "Vec", W, 4);
        var kd = GillDataFrame.ToDataFrame(keyed.Transform(ml.Data.LoadFromEnumerable(Rows(5))), columns: new[] { GillColumnNames.Decision, "Out" });
        Assert.AreEqual("Retrieve", kd[GillColumnNames.Decision][0]);
        Assert.AreEqual("Generate", kd[GillColumnNames.Decision][4]);
        keyed.Dispose();
    }
}
