using Gill.ML.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Generation;

[TestClass]
public sealed class OnnxStableDiffusionTests
{
    private const string Name = "sd-onnx-tiny";
    private static Dictionary<string, Tensor> _io = null!;
    private static OnnxStableDiffusion _sd = null!;

    [ClassInitialize]
    public static void Init(TestContext _)
    {
        _io = Fixtures.Io(Name);
        _sd = OnnxStableDiffusion.Load(Fixtures.Dir(Name), new OnnxStableDiffusionOptions
        {
            // The fixture's toy "empty prompt" ids (it has no tokenizer folder).
            EmptyPromptInputIds = _io["uncond_input_ids"][0].data<long>().ToArray(),
        });
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        _sd?.Dispose();
        foreach (var t in _io.Values) t.Dispose();
    }

    private static ImageGenerationOptions FixtureOptions(SchedulerKind kind = SchedulerKind.Default) => new()
    {
        Steps = 5,
        GuidanceScale = 7.5,
        InitialLatents = _io["initial_latents"],
        KeepIntermediateLatents = true,
        Scheduler = kind,
    };

    [TestMethod]
    public void ReadsShapesFromTheExport()
    {
        Assert.AreEqual(new ConditioningShape(8, 12), _sd.ConditioningShape);
        Assert.AreEqual(4, _sd.LatentChannels);
        Assert.AreEqual(2, _sd.VaeScaleFactor);
        Assert.AreEqual(0.18215, _sd.VaeScalingFactor, 1e-12);
        Assert.AreEqual("DDIMScheduler", _sd.SchedulerConfig.ClassName);
        Assert.AreEqual("PNDMScheduler", _sd.GetSchedulerConfig(SchedulerKind.Pndm).ClassName);
    }

    [TestMethod]
    public void TextEncoderMatchesFixture()
    {
        using var scope = torch.NewDisposeScope();
        Fixtures.AssertClose(_io["cond_last_hidden_state"], _sd.EncodeText(_io["cond_input_ids"]), "cond last_hidden_state");
        Fixtures.AssertClose(_io["uncond_last_hidden_state"], _sd.EncodeText(_io["uncond_input_ids"]), "uncond last_hidden_state");
        Fixtures.AssertClose(_io["uncond_last_hidden_state"], _sd.EncodeEmptyPrompt(), "empty-prompt embedding");
        // int32 ids are accepted too (converted to the session's element type).
        Fixtures.AssertClose(_io["cond_last_hidden_state"], _sd.EncodeText(_io["cond_input_ids"].to(ScalarType.Int32)), "cond from int32 ids");
    }

    [TestMethod]
    public void DdimTextRunMatchesFixture()
    {
        using var scope = torch.NewDisposeScope();
        var cond = _sd.EncodeText(_io["cond_input_ids"]);
        var uncond = _sd.EncodeText(_io["uncond_input_ids"]);
        var options = FixtureOptions();
        options.NegativeEmbeddings = uncond;
        using var result = _sd.Generate(cond, options);
        CollectionAssert.AreEqual(_io["timesteps"].data<long>().ToArray(), result.Timesteps, "DDIM timesteps");
        Fixtures.AssertClose(_io["latents_after_each_step"], result.LatentsPerCall!, "latents after each step");
        Fixtures.AssertClose(_io["image"], result.Images, "image");
    }

    [TestMethod]
    public void DdimPromptEmbedsRunMatchesFixtureWithDefaultNegative()
    {
        using var scope = torch.NewDisposeScope();
        using var result = _sd.Generate(_io["prompt_embeds"], FixtureOptions());
        Fixtures.AssertClose(_io["prompt_embeds_latents_after_each_step"], result.LatentsPerCall!, "prompt_embeds latents");
        Fixtures.AssertClose(_io["prompt_embeds_image"], result.Images, "prompt_embeds image");
        Assert.IsNull(result.Seeds);
    }

    [TestMethod]
    public void FloatArrayOverloadMatchesFixture()
    {
        using var scope = torch.NewDisposeScope();
        var embeds = _io["prompt_embeds"];
        using var result = _sd.Generate(embeds.data<float>().ToArray(), embeds.shape, FixtureOptions());
        Fixtures.AssertClose(_io["prompt_embeds_image"], result.Images, "prompt_embeds image (float[])");
    }

    [TestMethod]
    public void PndmPromptEmbedsRunMatchesFixture()
    {
        using var scope = torch.NewDisposeScope();
        var progress = new List<ImageGenerationProgress>();
        using var result = _sd.Generate(_io["prompt_embeds"], FixtureOptions(SchedulerKind.Pndm), new SyncProgress(progress));
        CollectionAssert.AreEqual(_io["pndm_timesteps"].data<long>().ToArray(), result.Timesteps, "PNDM timesteps");
        Assert.AreEqual(6, progress.Count);
        Assert.AreEqual(new ImageGenerationProgress(6, 6, 1), progress[^1]);
        Fixtures.AssertClose(_io["pndm_prompt_embeds_latents_after_each_call"], result.LatentsPerCall!, "PNDM latents after each call");
        Fixtures.AssertClose(_io["pndm_prompt_embeds_image"], result.Images, "PNDM image");
    }

    [TestMethod]
    public void TextPromptPathUsesTokenizerDelegate()
    {
        using var scope = torch.NewDisposeScope();
        var condIds = _io["cond_input_ids"][0].data<long>().ToArray();
        var uncondIds = _io["uncond_input_ids"][0].data<long>().ToArray();
        using var sd = OnnxStableDiffusion.Load(Fixtures.Dir(Name), new OnnxStableDiffusionOptions
        {
            Tokenizer = text => text.Length == 0 ? uncondIds : condIds,
        });
        using var result = sd.GenerateFromText("a prompt", FixtureOptions());
        Fixtures.AssertClose(_io["latents_after_each_step"], result.LatentsPerCall!, "latents (text path)");
        Fixtures.AssertClose(_io["image"], result.Images, "image (text path)");
    }

    [TestMethod]
    public void SameSeedSameImageDifferentSeedDifferentImage()
    {
        using var scope = torch.NewDisposeScope();
        var embeds = _io["prompt_embeds"];
        ImageGenerationOptions Opt(long seed) => new() { Steps = 3, Seed = seed, Height = 16, Width = 16 };
        using var a = _sd.Generate(embeds, Opt(1337));
        using var b = _sd.Generate(embeds, Opt(1337));
        using var c = _sd.Generate(embeds, Opt(42));
        CollectionAssert.AreEqual(new long[] { 1, 3, 16, 16 }, a.Images.shape);
        Assert.IsTrue(a.Images.eq(b.Images).all().item<bool>(), "same seed must reproduce the image");
        Assert.IsTrue(a.Images.sub(c.Images).abs().max().item<float>() > 1e-3f, "different seeds must give different images");
        Assert.IsTrue(a.Images.min().item<float>() >= 0f && a.Images.max().item<float>() <= 1f);
        CollectionAssert.AreEqual(new long[] { 1337 }, a.Seeds!.ToArray());

        // Seeded latents are torch.randn with a CPU generator of that seed.
        using var gen = new torch.Generator(1337, torch.CPU);
        var expected = torch.randn(new long[] { 1, 4, 8, 8 }, generator: gen);
        using var d = _sd.Generate(embeds, new ImageGenerationOptions { Steps = 3, InitialLatents = expected });
        Assert.IsTrue(a.Images.eq(d.Images).all().item<bool>(), "seeded run must equal a run from torch.randn(generator(seed))");
    }

    [TestMethod]
    public void PerImageSeedsMatchSingleImageRuns()
    {
        using var scope = torch.NewDisposeScope();
        var embeds = _io["prompt_embeds"];
        var two = torch.cat(new[] { embeds, embeds }, 0);
        using var batch = _sd.Generate(two, new ImageGenerationOptions { Steps = 2, Seeds = new long[] { 7, 8 }, Height = 16, Width = 16 });
        using var single = _sd.Generate(embeds, new ImageGenerationOptions { Steps = 2, Seeds = new long[] { 8 }, Height = 16, Width = 16 });
        Assert.AreEqual(2, batch.Count);
        Fixtures.AssertClose(single.Images[0], batch[1], "image of seed 8 in a batch");
        Assert.IsTrue(batch[0].sub(batch[1]).abs().max().item<float>() > 1e-3f);
    }

    [TestMethod]
    public void WrongEmbeddingShapeNamesExpectedShape()
    {
        using var scope = torch.NewDisposeScope();
        var ex = Assert.ThrowsExactly<ArgumentException>(() => _sd.Generate(torch.zeros(1, 7, 12), new ImageGenerationOptions { Steps = 1, Seed = 1 }));
        StringAssert.Contains(ex.Message, "8×12");
        StringAssert.Contains(ex.Message, "[1,7,12]");
        var ex2 = Assert.ThrowsExactly<ArgumentException>(() => _sd.Generate(torch.zeros(8, 12), new ImageGenerationOptions { Steps = 1, Seed = 1 }));
        StringAssert.Contains(ex2.Message, "[B, 8, 12]");
        var ex3 = Assert.ThrowsExactly<ArgumentException>(() => _sd.Generate(torch.zeros(1, 8, 12),
            new ImageGenerationOptions { Steps = 1, NegativeEmbeddings = torch.zeros(1, 8, 10), Seed = 1 }));
        StringAssert.Contains(ex3.Message, "negative");
        var ex4 = Assert.ThrowsExactly<ArgumentException>(() => _sd.Generate(new float[10], new long[] { 1, 8, 12 }));
        StringAssert.Contains(ex4.Message, "96");
        var ex5 = Assert.ThrowsExactly<ArgumentException>(() => _sd.Generate(torch.zeros(1, 8, 12), new ImageGenerationOptions { Steps = 1, Height = 15, Width = 16 }));
        StringAssert.Contains(ex5.Message, "multiples of the VAE scale 2");
        // This export has static latent dims: other sizes are refused by name before ONNX Runtime sees them.
        var ex6 = Assert.ThrowsExactly<ArgumentException>(() => _sd.Generate(torch.zeros(1, 8, 12), new ImageGenerationOptions { Steps = 1, Height = 16, Width = 24, GuidanceScale = 1 }));
        StringAssert.Contains(ex6.Message, "images 16×16");
    }

    [TestMethod]
    public void MissingFolderPartNamesTheFile()
    {
        var tmp = Path.Combine(Path.GetTempPath(), "gill-sd-" + Guid.NewGuid().ToString("N"));
        try
        {
            CopyDir(Fixtures.Dir(Name), tmp);
            File.Delete(Path.Combine(tmp, "unet", "model.onnx"));
            var ex = Assert.ThrowsExactly<FileNotFoundException>(() => OnnxStableDiffusion.Load(tmp));
            StringAssert.Contains(ex.Message, "unet/model.onnx");
            File.Delete(Path.Combine(tmp, "model_index.json"));
            ex = Assert.ThrowsExactly<FileNotFoundException>(() => OnnxStableDiffusion.Load(tmp));
            StringAssert.Contains(ex.Message, "model_index.json");
            Assert.ThrowsExactly<DirectoryNotFoundException>(() => OnnxStableDiffusion.Load(Path.Combine(tmp, "nope")));
        }
        finally
        {
            Directory.Delete(tmp, true);
        }
    }

    [TestMethod]
    public void NoTokenizerAndNoNegativeGivesClearError()
    {
        using var scope = torch.NewDisposeScope();
        using var sd = OnnxStableDiffusion.Load(Fixtures.Dir(Name));
        var ex = Assert.ThrowsExactly<InvalidOperationException>(() => sd.Generate(_io["prompt_embeds"], new ImageGenerationOptions { Steps = 1, Seed = 1 }));
        StringAssert.Contains(ex.Message, "NegativeEmbeddings");
        // Without guidance no negative is needed.
        using var r = sd.Generate(_io["prompt_embeds"], new ImageGenerationOptions { Steps = 1, Seed = 1, GuidanceScale = 1 });
        Assert.AreEqual(1, r.Count);
    }

    [TestMethod]
    public void CudaProviderFailsClearlyOrLoads()
    {
        try
        {
            using var sd = OnnxStableDiffusion.Load(Fixtures.Dir(Name), new OnnxStableDiffusionOptions { ExecutionProvider = OnnxExecutionProvider.Cuda });
            Assert.AreEqual(new ConditioningShape(8, 12), sd.ConditioningShape);
        }
        catch (InvalidOperationException e)
        {
            StringAssert.Contains(e.Message, "CUDA execution provider is not available");
        }
    }

    [TestMethod]
    public void CancellationStopsGeneration()
    {
        using var scope = torch.NewDisposeScope();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsExactly<OperationCanceledException>(() => _sd.Generate(_io["prompt_embeds"], FixtureOptions(), null, cts.Token));
    }

    [TestMethod]
    public void RepeatedGenerationDoesNotLeakTensors()
    {
        void Once()
        {
            using var r = _sd.Generate(_io["prompt_embeds"], FixtureOptions(SchedulerKind.Pndm));
        }
        Once();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) Once();
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount, "live tensors grew across generations");
    }

    [TestMethod]
    public void PngHelpersRoundTrip()
    {
        using var scope = torch.NewDisposeScope();
        using var result = _sd.Generate(_io["prompt_embeds"], FixtureOptions());
        var path = Path.Combine(Path.GetTempPath(), "gill-sd-" + Guid.NewGuid().ToString("N") + ".png");
        try
        {
            result.SavePng(0, path);
            var loaded = ImageTensorIO.Load(path);
            var expected = result[0].mul(255).round().div(255);
            Fixtures.AssertClose(expected, loaded, "PNG round trip", rel: 1e-6);
            CollectionAssert.AreEqual(result.ToPng(0), File.ReadAllBytes(path));
            using var ml = result.ToMLImage(0);
            Assert.AreEqual(16, ml.Width);
            Assert.AreEqual(16, ml.Height);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void CopyDir(string from, string to)
    {
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(dir.Replace(from, to));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, file.Replace(from, to));
    }

    private sealed class SyncProgress(List<ImageGenerationProgress> list) : IProgress<ImageGenerationProgress>
    {
        public void Report(ImageGenerationProgress value) => list.Add(value);
    }
}
