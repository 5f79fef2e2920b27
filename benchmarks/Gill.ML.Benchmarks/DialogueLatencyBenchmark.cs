using System.Globalization;
using System.Text.Json.Nodes;
using Gill.ML.Generation;
using Gill.ML.Inference;
using Gill.ML.Modules;
using Gill.ML.Retrieval;
using Gill.ML.Stages.VisualFeatures;
using Gill.ML.Tokenization;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Benchmarks;

/// <summary>
/// One dialogue turn on a small random GILL (OPT 4×256 over the GPT-2 tokenizer, random heads, 50k-image random gallery,
/// the tiny ONNX Stable Diffusion fixture as generator), split into visual encoding, LM, retrieval and generation.
/// Args: [--gallery N] [--tokens N] [--threads N].
/// </summary>
internal sealed class DialogueLatencyBenchmark : IBenchmark
{
    public string Name => "dialogue-latency";
    public string Description => "One GILL dialogue turn split into LM, retrieval and image generation (small random config)";

    public int Run(string[] args)
    {
        long galleryN = 50_000;
        int tokens = 24;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--gallery") galleryN = long.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (args[i] == "--tokens") tokens = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (args[i] == "--threads") torch.set_num_threads(int.Parse(args[++i], CultureInfo.InvariantCulture));
        }
        string root = FindRepoRoot();
        string sd = Path.Combine(root, "tests", "Gill.ML.Tests", "fixtures", "sd-onnx-tiny");
        string tmp = Path.Combine(Path.GetTempPath(), "gill-dialogue-bench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(tmp);
        try
        {
            var tokenizer = GillTokenizer.Gpt2();
            var ids = tokenizer.AddGillTokens(8);
            var lmConfig = CausalLM.ParseConfig(JsonNode.Parse($$"""
                {"model_type":"opt","vocab_size":{{tokenizer.BaseVocabularySize + 1}},"hidden_size":256,"num_hidden_layers":4,"num_attention_heads":4,
                 "ffn_dim":1024,"max_position_embeddings":256,"word_embed_proj_dim":256,"do_layer_norm_before":true,"activation_function":"relu",
                 "pad_token_id":1,"bos_token_id":50256,"eos_token_id":50256,"tie_word_embeddings":true}
                """)!.AsObject(), "benchmark");
            var lm = CausalLM.Create(lmConfig, seed: 1);
            var config = new GillConfig
            {
                NVisualTokens = 4, NumTokens = 8, VisualHiddenSize = 64, RetEmbDim = 256, GenEmbDim = 12, NumClipTokens = 8,
                MapperHiddenDim = 64, MapperNumHeads = 4, MapperNumEncoderLayers = 2, MapperNumDecoderLayers = 2,
                RetrievalTokenIdx = ids.ImgTokenIds.ToArray(), GenTokenIdx = ids.ImgTokenIds.ToArray(), OptVersion = null, VisualEncoder = null,
            };
            using var core = new GillCoreModel(lm, config, ownsLanguageModel: true, seed: 2);
            var encoder = new PatchEncoder();
            string galleryPath = Path.Combine(tmp, "gallery.gidx");
            using (var writer = new GillRetrievalIndexWriter(galleryPath, 256, GillRetrievalIndex.ComputeModelHash(core, encoder)))
            {
                using var gen = new Generator(3);
                for (long s = 0; s < galleryN; s += 65536)
                {
                    using var scope = torch.NewDisposeScope();
                    long m = Math.Min(65536, galleryN - s);
                    writer.Add(torch.randn(new[] { m, 256L }, generator: gen), Enumerable.Range(0, (int)m).Select(i => $"{s + i}").ToList());
                }
                writer.Complete();
            }
            using var gallery = GillRetrievalIndex.Open(galleryPath);
            using var generator = OnnxStableDiffusion.Load(sd);
            using var model = new GillModel(core, tokenizer, encoder, generator, null, gallery);
            string image = Path.Combine(tmp, "in.png");
            using (var t = torch.rand(3, 64, 64, generator: new Generator(4))) ImageTensorIO.SavePng(t, image);

            var prompt = GillPrompt.Of(GillImageInput.FromFile(image), "Q: Can you show me a picture of a red circle on a blue background?\nA:");
            Console.WriteLine($"threads {torch.get_num_threads()}, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}; LM OPT 4×256 (vocab {core.FrozenVocabSize}), k=4, r=8, gallery {galleryN:N0}×256 fp32, generator sd-onnx-tiny 5 steps 16×16");
            using var negative = torch.zeros(1, 8, 12);
            foreach (var mode in new[] { GillDecisionMode.AlwaysRetrieve, GillDecisionMode.AlwaysGenerate })
            {
                foreach (bool cache in new[] { true, false })
                {
                    var o = new GillGenerationOptions
                    {
                        MaxNewTokens = tokens, MinTokensBeforeImage = tokens / 2, ImageTokenScaleFactor = 1e5, StopAtEos = false,
                        DecisionMode = mode, UseCache = cache, ImageGeneration = new ImageGenerationOptions { Seed = 1, Steps = 5, NegativeEmbeddings = negative },
                    };
                    var runs = new List<GillTimings>();
                    for (int i = 0; i < 6; i++)
                    {
                        using var r = model.Generate(prompt, o);
                        if (i > 0) runs.Add(r.Timings);
                    }
                    string F(Func<GillTimings, TimeSpan> f) => $"{Measure.Median(runs.Select(x => f(x).TotalMilliseconds).ToList()):F1}";
                    Console.WriteLine($"{mode,-15} cache {(cache ? "on " : "off")}: total {F(t => t.Total)} ms = visual {F(t => t.VisualEncoding)} + LM {F(t => t.LanguageModel)} + retrieval {F(t => t.Retrieval)} + generation {F(t => t.Generation)} ms (median of {runs.Count}, {tokens} sampled tokens + 7 forced)");
                }
            }
            return 0;
        }
        finally
        {
            try { Directory.Delete(tmp, true); } catch (IOException) { }
        }
    }

    private static string FindRepoRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "Gill.ML.sln"))) d = d.Parent;
        return d?.FullName ?? throw new DirectoryNotFoundException("Cannot find the repository root (Gill.ML.sln) above " + AppContext.BaseDirectory);
    }

    /// <summary>64 features: mean colour of an 8×8 grid of cells, luminance-weighted, centred.</summary>
    private sealed class PatchEncoder : IVisualEncoder
    {
        public string Name => "patch-bench";
        public int FeatureSize => 64;
        public int EmbeddingSize => 0;

        public VisualEncoding Encode(IReadOnlyList<SKBitmap> images, bool includeEmbedding)
        {
            var f = new float[images.Count * 64];
            for (int n = 0; n < images.Count; n++)
            {
                var b = images[n];
                var sums = new double[64];
                var counts = new int[64];
                for (int y = 0; y < b.Height; y++)
                    for (int x = 0; x < b.Width; x++)
                    {
                        var c = b.GetPixel(x, y);
                        int cell = (y * 8 / b.Height) * 8 + x * 8 / b.Width;
                        sums[cell] += (c.Red + 2.0 * c.Green + 3.0 * c.Blue) / (6 * 255.0);
                        counts[cell]++;
                    }
                for (int i = 0; i < 64; i++) f[n * 64 + i] = (float)(sums[i] / Math.Max(1, counts[i]) - 0.5);
            }
            return new VisualEncoding(images.Count, 64, f);
        }
    }
}
