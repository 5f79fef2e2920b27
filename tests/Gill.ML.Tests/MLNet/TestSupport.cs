using System.Text.Json;
using Gill.ML.MLNet;
using Gill.ML.Persistence;
using Gill.ML.Serialization;
using Gill.ML.Stages.VisualFeatures;
using Microsoft.ML;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.MLNet;

/// <summary>Small images rendered with SkiaSharp into a temporary folder.</summary>
internal sealed class TestImages : IDisposable
{
    public TestImages(int count, int width = 32, int height = 24, string format = "png")
    {
        Folder = Path.Combine(Path.GetTempPath(), "gill-mlnet-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Folder);
        for (int i = 0; i < count; i++)
        {
            var path = Path.Combine(Folder, $"img{i}.{format}");
            using var bmp = Render(i, width, height);
            using var image = SKImage.FromBitmap(bmp);
            using var data = image.Encode(format == "png" ? SKEncodedImageFormat.Png : SKEncodedImageFormat.Jpeg, 95);
            File.WriteAllBytes(path, data.ToArray());
            Paths.Add(path);
        }
    }

    public string Folder { get; }

    public List<string> Paths { get; } = new();

    /// <summary>A deterministic picture: a colour gradient, a circle and a rectangle that vary with <paramref name="seed"/>.</summary>
    public static SKBitmap Render(int seed, int width, int height)
    {
        var bmp = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        using var canvas = new SKCanvas(bmp);
        var c0 = new SKColor((byte)(40 * seed % 256), (byte)(255 - 30 * seed % 256), (byte)(90 + 50 * seed % 166));
        var c1 = new SKColor((byte)(200 - 20 * seed % 200), (byte)(70 * seed % 256), (byte)(20 + 10 * seed % 200));
        using (var paint = new SKPaint { Shader = SKShader.CreateLinearGradient(new SKPoint(0, 0), new SKPoint(width, height), new[] { c0, c1 }, SKShaderTileMode.Clamp) })
            canvas.DrawRect(0, 0, width, height, paint);
        using (var paint = new SKPaint { Color = new SKColor((byte)(17 * seed % 256), 200, (byte)(255 - 17 * seed % 256)), IsAntialias = true })
            canvas.DrawCircle(width * (0.3f + 0.05f * (seed % 5)), height * 0.5f, Math.Min(width, height) * 0.25f, paint);
        using (var paint = new SKPaint { Color = SKColors.Black })
            canvas.DrawRect(width * 0.6f, height * 0.1f, width * 0.2f, height * (0.2f + 0.1f * (seed % 4)), paint);
        canvas.Flush();
        return bmp;
    }

    public void Dispose()
    {
        try { Directory.Delete(Folder, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// A deterministic test encoder: features = per-channel mean colour (0–1) times per-channel weights read from a small
/// JSON "backbone" file, plus the mean of the top and bottom halves' brightness; embedding = [brightness, R − B].
/// Records every call's batch size.
/// </summary>
internal sealed class MeanColourEncoder : IPersistableVisualEncoder
{
    public const string KindName = "test-mean-colour";

    static MeanColourEncoder() => VisualEncoderRegistry.Register(KindName, r => new MeanColourEncoder(r.ResolveBackbone("weights")));

    public static void EnsureRegistered() => VisualEncoderRegistry.Register(KindName, r => new MeanColourEncoder(r.ResolveBackbone("weights")));

    private readonly float[] _weights;

    public MeanColourEncoder(string weightsFile)
    {
        WeightsFile = weightsFile;
        _weights = JsonSerializer.Deserialize<float[]>(File.ReadAllText(weightsFile))!;
    }

    public static string WriteWeights(string folder, params float[] w)
    {
        var p = Path.Combine(folder, "mean-colour-weights.json");
        File.WriteAllText(p, JsonSerializer.Serialize(w));
        return p;
    }

    public string WeightsFile { get; }

    public List<int> Calls { get; } = new();

    public string Name => "MeanColour";

    public int FeatureSize => 5;

    public int EmbeddingSize => 2;

    public string EncoderKind => KindName;

    public static float[] Compute(SKBitmap bmp, float[] w)
    {
        double r = 0, g = 0, b = 0, top = 0, bottom = 0;
        for (int y = 0; y < bmp.Height; y++)
            for (int x = 0; x < bmp.Width; x++)
            {
                var c = bmp.GetPixel(x, y);
                r += c.Red; g += c.Green; b += c.Blue;
                double lum = (c.Red + c.Green + c.Blue) / 3.0;
                if (y < bmp.Height / 2) top += lum; else bottom += lum;
            }
        double n = bmp.Width * bmp.Height * 255.0;
        return new[] { (float)(r / n * w[0]), (float)(g / n * w[1]), (float)(b / n * w[2]), (float)(top / (n / 2)), (float)(bottom / (n / 2)) };
    }

    public VisualEncoding Encode(IReadOnlyList<SKBitmap> images, bool includeEmbedding)
    {
        Calls.Add(images.Count);
        var f = new float[images.Count * FeatureSize];
        var e = includeEmbedding ? new float[images.Count * EmbeddingSize] : null;
        for (int i = 0; i < images.Count; i++)
        {
            var v = Compute(images[i], _weights);
            v.CopyTo(f, i * FeatureSize);
            if (e is not null)
            {
                e[2 * i] = (v[0] + v[1] + v[2]) / 3;
                e[2 * i + 1] = v[0] - v[2];
            }
        }
        return new VisualEncoding(images.Count, FeatureSize, f, EmbeddingSize, e);
    }

    public void SaveTo(GillModelWriter writer) => writer.AddBackbone("weights", WeightsFile);
}

/// <summary>
/// A test stage over a float vector [4]: Out[2,2] = x ⊙ w (w trainable, saved as weights), Sum = Σx, Positive = Sum &gt; 0,
/// Sign = "pos"/"neg", Decision = key (1: Generate if Sum &gt; 0 else 2: Retrieve). Uses TorchSharp for Out.
/// </summary>
[GillStage("TestAffine")]
internal sealed class AffineTestTransformer : GillTransformerBase, IGillPersistable
{
    private readonly Tensor _w;
    private readonly string _input;

    public AffineTestTransformer(MLContext ctx, string input, float[] w, int batchSize) : base(ctx, "TestAffine", batchSize)
    {
        _input = input;
        _w = torch.tensor(w, new long[] { 2, 2 }).DetachFromDisposeScope();
        InputColumns = new[] { GillColumn.FloatVector(input, 4) };
        OutputColumns = new[]
        {
            GillColumn.FloatVector("Out", 2, 2), GillColumn.Float("Sum"), GillColumn.Boolean("Positive"), GillColumn.Text("Sign"),
            GillColumn.Key(GillColumnNames.Decision, "Generate", "Retrieve"),
        };
    }

    public override IReadOnlyList<GillColumn> InputColumns { get; }

    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    protected override void ProcessBatch(GillBatch batch)
    {
        Assert.IsFalse(torch.is_grad_enabled(), "batches run under no_grad");
        var x = batch.GetTensor(_input).view(batch.Count, 2, 2);
        if (batch.IsOutputActive("Out")) batch.SetOutput("Out", x * _w);
        var v = batch.GetFloatVectors(_input);
        var sums = new float[batch.Count];
        for (int i = 0; i < batch.Count; i++) for (int k = 0; k < 4; k++) sums[i] += v[i * 4 + k];
        if (batch.IsOutputActive("Sum")) sums.CopyTo(batch.GetOutputFloats("Sum"));
        if (batch.IsOutputActive("Positive")) { var o = batch.GetOutputBooleans("Positive"); for (int i = 0; i < sums.Length; i++) o[i] = sums[i] > 0; }
        if (batch.IsOutputActive("Sign")) { var o = batch.GetOutputTexts("Sign"); for (int i = 0; i < sums.Length; i++) o[i] = sums[i] > 0 ? "pos" : "neg"; }
        if (batch.IsOutputActive(GillColumnNames.Decision)) { var o = batch.GetOutputKeys(GillColumnNames.Decision); for (int i = 0; i < sums.Length; i++) o[i] = sums[i] > 0 ? 1u : 2u; }
    }

    public int FormatVersion => 1;

    public void SaveTo(GillModelWriter writer)
    {
        writer.Seed = 1234;
        writer.SetOptions("stage", new Dictionary<string, object> { ["input"] = _input, ["batchSize"] = BatchSize });
        writer.AddTokenizerAddition("[IMG0]", 50265);
        writer.WriteWeights(new[] { new KeyValuePair<string, Tensor>("w", _w) });
    }

    internal static AffineTestTransformer LoadFrom(GillModelReader reader)
    {
        var o = reader.GetOptions<Dictionary<string, JsonElement>>("stage");
        using var w = reader.OpenWeights().Load("w");
        Assert.AreEqual(1234, reader.Seed);
        Assert.AreEqual("[IMG0]", reader.TokenizerAdditions.Single().Token);
        return new AffineTestTransformer(reader.Context, o["input"].GetString()!, w.data<float>().ToArray(), o["batchSize"].GetInt32());
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _w.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>Estimator of <see cref="AffineTestTransformer"/>.</summary>
internal sealed class AffineTestEstimator : GillEstimatorBase<AffineTestTransformer>
{
    private readonly string _input;
    private readonly float[] _w;
    private readonly int _batch;

    public AffineTestEstimator(MLContext ctx, string input, float[] w, int batch) : base(ctx, "TestAffine")
    {
        _input = input;
        _w = w;
        _batch = batch;
        using var probe = new AffineTestTransformer(ctx, input, w, batch);
        InputColumns = probe.InputColumns;
        OutputColumns = probe.OutputColumns;
    }

    public override IReadOnlyList<GillColumn> InputColumns { get; }

    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    public int FitCalls { get; private set; }

    public int Seed(int? explicitSeed) => ResolveSeed(explicitSeed);

    public void Log(string message)
    {
        using var ch = StartChannel();
        ch.Info(Microsoft.ML.Runtime.MessageSensitivity.None, message);
    }

    protected override AffineTestTransformer FitCore(IDataView input)
    {
        FitCalls++;
        return new AffineTestTransformer(Context, _input, _w, _batch);
    }
}
