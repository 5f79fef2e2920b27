using System.Text.Json;
using Gill.ML.Generation;
using Gill.ML.Inference;
using Gill.ML.Modules;
using Gill.ML.Stages.VisualFeatures;
using Gill.ML.Tokenization;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Inference;

/// <summary>Tiny deterministic parts for inference tests: opt-tiny + fixture heads, a 95-token OPT-style tokenizer, a grid encoder, a counting generator.</summary>
internal static class InferenceTestKit
{
    public static string NewTempDir(string name)
    {
        var dir = Path.Combine(Path.GetTempPath(), "gill-infer-tests", name + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Writes an OPT-layout tokenizer folder with 95 entries (ids &lt; 96), so &lt;|image|&gt; = 95 and [IMG0..3] = 96..99.</summary>
    public static string WriteTokenizerFolder(string dir)
    {
        var tokens = new List<string> { "<s>", "<pad>", "</s>", "<unk>" };
        for (char c = 'a'; c <= 'z'; c++) tokens.Add(c.ToString());
        for (char c = 'A'; c <= 'Z'; c++) tokens.Add(c.ToString());
        for (char c = '0'; c <= '9'; c++) tokens.Add(c.ToString());
        tokens.AddRange(new[] { "Ġ", "Ċ", ".", ":", "?", ",", "!" });
        var merges = new[] { "Ġ t", "h e", "Ġ a", "i n", "e r", "o n", "Ġt he", "Ġ c", "a t" };
        foreach (var m in merges) tokens.Add(m.Replace(" ", ""));
        int filler = 0;
        while (tokens.Count < 95) tokens.Add($"<extra_{filler++}>");
        var vocab = tokens.Select((t, i) => (t, i)).ToDictionary(x => x.t, x => x.i);
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\n" + string.Join("\n", merges) + "\n");
        File.WriteAllText(Path.Combine(dir, "config.json"), "{\"model_type\":\"opt\"}");
        return dir;
    }

    public static GillTokenizer Tokenizer()
    {
        var tok = GillTokenizer.FromFolder(WriteTokenizerFolder(NewTempDir("tok")));
        var ids = tok.AddGillTokens(4);
        if (!ids.ImgTokenIds.SequenceEqual(new[] { 96, 97, 98, 99 })) throw new InvalidOperationException("Unexpected [IMG] ids " + string.Join(",", ids.ImgTokenIds));
        return tok;
    }

    public static GillModel Model(IImageGenerator? generator = null, Retrieval.GillRetrievalIndex? gallery = null,
        GillDecisionClassifier? classifier = null, GillContextMemory? memory = null)
    {
        var core = GillTestData.LoadStepModel();
        return new GillModel(core, Tokenizer(), new GridVisualEncoder(), generator, classifier, gallery, memory, ownsComponents: false);
    }

    /// <summary>A solid-colour PNG with a small pattern chosen by <paramref name="seed"/>.</summary>
    public static string WriteImage(string dir, string name, int seed)
    {
        var rng = new Random(seed);
        using var t = torch.rand(new long[] { 3, 12, 12 }, generator: new Generator((ulong)seed));
        var path = Path.Combine(dir, name);
        ImageTensorIO.SavePng(t, path);
        _ = rng;
        return path;
    }
}

/// <summary>Features: mean of (r + 2g + 3b)/6 over a 5×4 grid of cells, centred (20 values).</summary>
internal sealed class GridVisualEncoder : IVisualEncoder
{
    public string Name => "grid-test";
    public int FeatureSize => 20;
    public int EmbeddingSize => 0;
    public int Calls { get; private set; }

    public VisualEncoding Encode(IReadOnlyList<SKBitmap> images, bool includeEmbedding)
    {
        Calls++;
        var f = new float[images.Count * 20];
        for (int n = 0; n < images.Count; n++)
        {
            var bmp = images[n];
            var sums = new double[20];
            var counts = new int[20];
            for (int y = 0; y < bmp.Height; y++)
                for (int x = 0; x < bmp.Width; x++)
                {
                    var c = bmp.GetPixel(x, y);
                    int cell = (y * 4 / bmp.Height) * 5 + x * 5 / bmp.Width;
                    sums[cell] += (c.Red + 2.0 * c.Green + 3.0 * c.Blue) / (6 * 255.0);
                    counts[cell]++;
                }
            for (int i = 0; i < 20; i++) f[n * 20 + i] = (float)(4 * (sums[i] / Math.Max(1, counts[i]) - 0.5));
        }
        return new VisualEncoding(images.Count, 20, f);
    }
}

/// <summary>Maps the conditioning [B,6,12] to an 8×8 image through fixed weights; counts calls.</summary>
internal sealed class CountingImageGenerator : IImageGenerator
{
    public int Calls { get; private set; }
    public ConditioningShape ConditioningShape => new(6, 12);

    public GeneratedImages Generate(Tensor promptEmbeddings, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        Calls++;
        using var scope = torch.NewDisposeScope();
        long b = promptEmbeddings.shape[0];
        var w = torch.linspace(-1, 1, 12 * 3 * 64).view(12, 3 * 64);
        var seedShift = (float)((options?.Seed ?? 0) % 7) * 0.01f;
        var img = torch.sigmoid(torch.matmul(promptEmbeddings.to(ScalarType.Float32).cpu().mean(new long[] { 1 }), w) + seedShift).view(b, 3, 8, 8);
        return new GeneratedImages(img.MoveToOuterDisposeScope(), null, Array.Empty<long>(), options?.Seed is long s ? new[] { s } : null);
    }

    public GeneratedImages Generate(float[] promptEmbeddings, long[] shape, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        using var t = torch.tensor(promptEmbeddings, shape);
        return Generate(t, options, progress, cancellationToken);
    }

    public void Dispose() { }
}
