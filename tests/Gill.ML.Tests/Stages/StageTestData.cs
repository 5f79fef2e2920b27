using System.Text.Json;
using Gill.ML.Modules.Clip;
using Gill.ML.Stages;
using Gill.ML.Tokenization;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;

namespace Gill.ML.Tests.Stages;

/// <summary>A training row: caption, 32-d visual features and an [8 × 24] generation target.</summary>
public sealed class GillRow
{
    public string Caption { get; set; } = "";

    [VectorType(StageTestData.FeatureSize)]
    public float[] ClipPooledFeatures { get; set; } = Array.Empty<float>();

    [VectorType(StageTestData.TargetTokens, StageTestData.TargetWidth)]
    public float[] GenerationTarget { get; set; } = Array.Empty<float>();
}

/// <summary>A row with the decision label.</summary>
public sealed class LabelledRow
{
    public string Caption { get; set; } = "";

    public bool Label { get; set; }
}

/// <summary>Backbones and data for the stage tests: opt-tiny with a tiny OPT-style tokenizer, a tiny CLIP text encoder.</summary>
internal static class StageTestData
{
    public const int FeatureSize = 32;   // clip-vision-tiny hidden size
    public const int TargetTokens = 8;   // L (clip-text-tiny allows 12 positions)
    public const int TargetWidth = 24;   // clip-text-tiny hidden size
    public const int MaxLength = 14;     // 2·(k + T) − 1 ≤ 32 positions of opt-tiny with concatenation

    private static readonly Lazy<string> s_root = new(() =>
    {
        var root = Path.Combine(Path.GetTempPath(), "gill-stage-tests-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        };
        return root;
    });

    private static readonly Lazy<string> s_tokenizer = new(WriteTokenizer);
    private static readonly Lazy<string> s_clipText = new(WriteClipText);

    public static readonly string[] Captions =
    {
        "red box", "blue box", "red dot", "blue dot", "big sun", "a cat", "a dog", "red cat",
    };

    public static string NewDir(string name)
    {
        var d = Path.Combine(s_root.Value, name + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>
    /// A tiny OPT-style byte-level BPE folder: &lt;s&gt;, &lt;pad&gt;, &lt;/s&gt;, &lt;unk&gt; at 0..3, then "Ġ" and a–z (no merges:
    /// one token per character), so every id stays below opt-tiny's 96 rows.
    /// </summary>
    public static string TokenizerFolder => s_tokenizer.Value;

    /// <summary>A random CLIP text encoder shaped like clip-text-tiny (hidden 24, 12 positions) with a vocabulary built on <see cref="Captions"/>.</summary>
    public static string ClipTextFolder => s_clipText.Value;

    private static string WriteTokenizer()
    {
        var dir = NewDir("opt-tokenizer");
        var vocab = new Dictionary<string, int> { ["<s>"] = 0, ["<pad>"] = 1, ["</s>"] = 2, ["<unk>"] = 3, ["Ġ"] = 4 };
        for (char c = 'a'; c <= 'z'; c++) vocab[c.ToString()] = vocab.Count;
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\n");
        return dir;
    }

    private static string WriteClipText()
    {
        var dir = NewDir("clip-text");
        var built = ClipVocabularyBuilder.BuildAndSave(Captions.Concat(new[] { "green box", "a sun" }), dir, modelMaxLength: 12);
        var fixture = ClipTextEncoder.Load(Fixtures.Dir("clip-text-tiny"));
        int n = built.Vocabulary.Count; // ends with <|startoftext|>, <|endoftext|>
        var config = fixture.Config with { VocabSize = n, BosTokenId = n - 2, EosTokenId = n - 1, PadTokenId = n - 1 };
        fixture.Dispose();
        using var encoder = ClipTextEncoder.Create(config, withProjection: true, seed: 5);
        encoder.Save(dir);
        return dir;
    }

    /// <summary>The tiny GILL architecture for opt-tiny and the tiny CLIP towers.</summary>
    public static GillConfig Architecture() => new()
    {
        NVisualTokens = 2,
        NumTokens = 4,
        VisualHiddenSize = FeatureSize,
        RetEmbDim = 8,
        MapperHiddenDim = 16,
        MapperNumHeads = 2,
        MapperNumEncoderLayers = 1,
        MapperNumDecoderLayers = 1,
        GenEmbDim = TargetWidth,
        NumClipTokens = TargetTokens,
        OptVersion = null,
        VisualEncoder = null,
    };

    public static GillLanguageBackbone Backbone() =>
        GillLanguageBackbone.Load(Fixtures.Dir("opt-tiny"), TokenizerFolder, imgTokenCount: 4);

    /// <summary>
    /// A learnable set: features are a fixed function of the caption's letters; targets a fixed non-linear function of them.
    /// </summary>
    public static List<GillRow> Rows(int count, int seed = 3)
    {
        var rng = new Random(seed);
        var proj = new float[FeatureSize * TargetTokens * TargetWidth];
        for (int i = 0; i < proj.Length; i++) proj[i] = (float)(rng.NextDouble() * 2 - 1) * 0.3f;
        var rows = new List<GillRow>();
        for (int i = 0; i < count; i++)
        {
            var caption = Captions[i % Captions.Length];
            var f = new float[FeatureSize];
            foreach (var c in caption) if (c != ' ') f[(c - 'a') % FeatureSize] += 0.5f;
            var t = new float[TargetTokens * TargetWidth];
            for (int j = 0; j < t.Length; j++)
            {
                double s = 0;
                for (int d = 0; d < FeatureSize; d++) s += f[d] * proj[d * t.Length + j];
                t[j] = (float)Math.Tanh(s);
            }
            rows.Add(new GillRow { Caption = caption, ClipPooledFeatures = f, GenerationTarget = t });
        }
        return rows;
    }

    public static GillTrainingOptionsPreset Fast => new();

    /// <summary>Reads a float vector column of every row.</summary>
    public static List<float[]> Column(IDataView data, string name)
    {
        var result = new List<float[]>();
        var col = data.Schema[name];
        using var cursor = data.GetRowCursor(new[] { col });
        var getter = cursor.GetGetter<VBuffer<float>>(col);
        VBuffer<float> v = default;
        while (cursor.MoveNext())
        {
            getter(ref v);
            result.Add(v.DenseValues().ToArray());
        }
        return result;
    }

    public static void AssertSame(List<float[]> a, List<float[]> b, string what)
    {
        Assert.AreEqual(a.Count, b.Count, what + ": row count");
        for (int i = 0; i < a.Count; i++)
            CollectionAssert.AreEqual(a[i], b[i], $"{what}: row {i} differs");
    }

    /// <summary>
    /// Equal up to float32 rounding of the matrix products (1e-6 × (1 + max|a|)): the weights round-trip bit for bit,
    /// but the CPU BLAS may round the last bit differently between two copies of the same weights.
    /// </summary>
    public static void AssertNearlySame(List<float[]> a, List<float[]> b, string what)
    {
        Assert.AreEqual(a.Count, b.Count, what + ": row count");
        for (int i = 0; i < a.Count; i++)
        {
            Assert.AreEqual(a[i].Length, b[i].Length, $"{what}: row {i} length");
            double tol = 1e-6 * (1 + a[i].Max(Math.Abs));
            for (int j = 0; j < a[i].Length; j++)
                Assert.IsTrue(Math.Abs(a[i][j] - b[i][j]) <= tol, $"{what}: row {i}[{j}] {b[i][j]:R} != {a[i][j]:R}");
        }
    }

    public static Dictionary<string, torch.Tensor> Snapshot(torch.nn.Module module) =>
        module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone().DetachFromDisposeScope());
}

/// <summary>Fast training settings for tests.</summary>
internal sealed class GillTrainingOptionsPreset
{
    public Training.GillTrainingOptions Create() => new()
    {
        LearningRate = 3e-3,
        WarmupSteps = 0,
        LrStepSize = 1000,
        ConcatenationProbability = 0.5,
        CheckpointEvery = 0,
    };
}
