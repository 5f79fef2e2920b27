using Gill.ML.Inference;
using Gill.ML.Modules;
using Gill.ML.Retrieval;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Inference;

[TestClass]
public sealed class GillModelTests
{
    private static string s_dir = "";
    private static string s_img1 = "", s_img2 = "", s_img3 = "";

    [ClassInitialize]
    public static void Init(TestContext _)
    {
        GillTestThreads.Enter();
        s_dir = InferenceTestKit.NewTempDir("model");
        s_img1 = InferenceTestKit.WriteImage(s_dir, "a.png", 1);
        s_img2 = InferenceTestKit.WriteImage(s_dir, "b.png", 2);
        s_img3 = InferenceTestKit.WriteImage(s_dir, "c.png", 3);
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        GillTestThreads.Leave();
        try { Directory.Delete(s_dir, true); } catch (IOException) { }
    }

    private static GillPrompt Prompt(string first) => GillPrompt.Of(GillImageInput.FromFile(first), "a cat on the mat", GillImageInput.FromFile(s_img2), "then");

    private static GillGenerationOptions Forced(int minTokens = 2, int max = 6) => new()
    {
        MaxNewTokens = max, MinTokensBeforeImage = minTokens, ImageTokenScaleFactor = 1e5, StopAtEos = false,
    };

    [TestMethod]
    public void KvCacheGivesSameTokensAndImgStatesAsRecomputation()
    {
        using var model = InferenceTestKit.Model();
        var withCache = Forced(); withCache.UseCache = true;
        var without = Forced(); without.UseCache = false;
        using var a = model.Generate(Prompt(s_img1), withCache);
        using var b = model.Generate(Prompt(s_img1), without);
        CollectionAssert.AreEqual(a.TokenIds.ToArray(), b.TokenIds.ToArray());
        Assert.AreEqual(1, a.ImageGroups.Count);
        Assert.AreEqual(1, b.ImageGroups.Count);
        var ha = a.ImageGroups[0].ImgHiddenStates;
        var hb = b.ImageGroups[0].ImgHiddenStates;
        Assert.AreEqual(ha.Length, hb.Length);
        for (int i = 0; i < ha.Length; i++) Assert.AreEqual(ha[i], hb[i], 1e-4, $"[IMG] state {i}");
        CollectionAssert.AreNotEqual(new float[ha.Length], ha);
    }

    [TestMethod]
    public void ImgZeroForcesTheRestAndRespectsMinimumTokens()
    {
        using var model = InferenceTestKit.Model();
        var img = model.Core.ImgTokenIds;
        foreach (int min in new[] { 0, 2, 3 })
        {
            using var r = model.Generate(Prompt(s_img1), Forced(min, min + 2));
            var t = r.TokenIds;
            Assert.AreEqual(img[0], t[min], $"min {min}: [IMG0] comes right after the minimum");
            for (int j = 0; j < min; j++) Assert.IsFalse(img.Contains(t[j]), $"min {min}: no [IMG] before the minimum");
            for (int j = 1; j < img.Count; j++) Assert.AreEqual(img[j], t[min + j], $"[IMG{j}] forced");
            Assert.AreEqual(1, r.ImageGroups.Count);
            Assert.AreEqual(min, r.ImageGroups[0].TokenPosition);
        }
    }

    [TestMethod]
    public void WithoutScalingLaterImgTokensAreNeverSampled()
    {
        using var model = InferenceTestKit.Model();
        var img = model.Core.ImgTokenIds;
        for (int seed = 0; seed < 4; seed++)
        {
            using var r = model.Generate(Prompt(s_img1), new GillGenerationOptions { MaxNewTokens = 12, Temperature = 3.0, Seed = seed, StopAtEos = false, MaxImages = 3 });
            var t = r.TokenIds;
            for (int j = 0; j < t.Count; j++)
            {
                if (t[j] == img[1]) Assert.AreEqual(img[0], t[j - 1], "[IMG1] only right after [IMG0] (forced)");
                Assert.AreNotEqual(model.Tokenizer.GetTokenId(Gill.ML.Tokenization.GillTokenizer.ImageToken), t[j], "the <|image|> marker is never output");
            }
        }
    }

    [TestMethod]
    public void MaxImagesZeroGivesTextOnlyEvenWithHugeScale()
    {
        using var model = InferenceTestKit.Model();
        var o = Forced(0, 5); o.MaxImages = 0;
        using var r = model.Generate(GillPrompt.Question("what is it?", GillImageInput.FromFile(s_img1)), o);
        Assert.AreEqual(0, r.ImageGroups.Count);
        Assert.IsFalse(r.TokenIds.Any(model.Core.ImgTokenIds.Contains));
        Assert.AreEqual(5, r.TokenIds.Count);
    }

    [TestMethod]
    public void SeedsReproduce()
    {
        using var model = InferenceTestKit.Model();
        GillGenerationOptions O(long seed) => new() { MaxNewTokens = 10, Temperature = 1.0, TopP = 0.9, Seed = seed, StopAtEos = false };
        using var a = model.Generate(Prompt(s_img1), O(11));
        using var b = model.Generate(Prompt(s_img1), O(11));
        CollectionAssert.AreEqual(a.TokenIds.ToArray(), b.TokenIds.ToArray());
        var others = new[] { 12L, 13L, 14L }.Select(s => { using var r = model.Generate(Prompt(s_img1), O(s)); return string.Join(",", r.TokenIds); }).ToList();
        Assert.IsTrue(others.Any(o => o != string.Join(",", a.TokenIds)), "other seeds give other samples");
    }

    [TestMethod]
    public void BatchForcesPerRowAndMatchesSingleRows()
    {
        using var model = InferenceTestKit.Model();
        var prompts = new[] { Prompt(s_img1), GillPrompt.Of("a dog"), GillPrompt.Of(GillImageInput.FromFile(s_img3), "the cat") };
        var o = Forced(1, 5);
        var batch = model.GenerateBatch(prompts, o);
        for (int i = 0; i < prompts.Length; i++)
        {
            using var single = model.Generate(prompts[i], o);
            CollectionAssert.AreEqual(single.TokenIds.ToArray(), batch[i].TokenIds.ToArray(), $"row {i}");
            Assert.AreEqual(1, batch[i].ImageGroups.Count, $"row {i} has its [IMG] group forced");
            var hs = single.ImageGroups[0].ImgHiddenStates;
            var hb = batch[i].ImageGroups[0].ImgHiddenStates;
            for (int j = 0; j < hs.Length; j++) Assert.AreEqual(hs[j], hb[j], 1e-4, $"row {i} state {j}");
            batch[i].Dispose();
        }
    }

    [TestMethod]
    public void EveryInputImageInfluencesTheOutput()
    {
        using var model = InferenceTestKit.Model();
        using var a = model.Generate(Prompt(s_img1), Forced(0, 2));
        using var b = model.Generate(Prompt(s_img3), Forced(0, 2)); // only the FIRST image differs
        var ha = a.ImageGroups[0].ImgHiddenStates;
        var hb = b.ImageGroups[0].ImgHiddenStates;
        double diff = ha.Zip(hb).Max(p => Math.Abs(p.First - p.Second));
        Assert.IsTrue(diff > 1e-4, $"changing the first image changes the [IMG] states (max diff {diff})");
    }

    [TestMethod]
    public void TextIsKeptWholeUnlessFirstSentenceIsAsked()
    {
        Assert.AreEqual("A cat.", GillModel.FirstSentence("A cat. Then more"));
        Assert.AreEqual("A cat", GillModel.FirstSentence("A cat\nmore"));
        using var model = InferenceTestKit.Model();
        using var r = model.Generate(GillPrompt.Of("the cat"), new GillGenerationOptions { MaxNewTokens = 8, StopAtEos = false, MaxImages = 0 });
        Assert.AreEqual(model.Tokenizer.Decode(r.TokenIds, skipSpecialTokens: true), r.Text);
    }

    [TestMethod]
    public void GeneratorRunsOnlyWhenTheDecisionSaysGenerate()
    {
        string dir = InferenceTestKit.NewTempDir("gallery");
        for (int i = 0; i < 5; i++) InferenceTestKit.WriteImage(dir, $"g{i}.png", 100 + i);
        var generator = new CountingImageGenerator();
        using var core = GillTestData.LoadStepModel();
        string indexPath = Path.Combine(dir, "gallery.gidx");
        GillRetrievalIndexBuilder.BuildFromFolder(core, new GridVisualEncoder(), dir, indexPath);
        using var gallery = GillRetrievalIndex.Open(indexPath);
        using var model = new GillModel(core, InferenceTestKit.Tokenizer(), new GridVisualEncoder(), generator, null, gallery);

        GillGenerationOptions O(GillDecisionMode mode, double threshold = 0.5)
        {
            var o = Forced(1, 3); o.DecisionMode = mode; o.RetrievalScoreThreshold = threshold; return o;
        }
        using (var r = model.Generate(Prompt(s_img1), O(GillDecisionMode.AlwaysRetrieve)))
        {
            Assert.AreEqual(0, r.GeneratorCalls);
            Assert.AreEqual(GillImageDecision.Retrieve, r.ImageGroups[0].Decision);
            Assert.IsTrue(r.Parts.OfType<GillRetrievedImageOutput>().Any());
        }
        Assert.AreEqual(0, generator.Calls);
        using (var r = model.Generate(Prompt(s_img1), O(GillDecisionMode.AlwaysGenerate)))
        {
            Assert.AreEqual(1, r.GeneratorCalls);
            var img = r.Parts.OfType<GillGeneratedImageOutput>().Single();
            CollectionAssert.AreEqual(new long[] { 3, 8, 8 }, img.Image.shape);
            Assert.IsTrue(img.ToPng().Length > 0);
        }
        Assert.AreEqual(1, generator.Calls);
        using (var r = model.Generate(Prompt(s_img1), O(GillDecisionMode.Auto, threshold: -1)))
        {
            Assert.AreEqual(GillDecisionSource.Threshold, r.ImageGroups[0].Source);
            Assert.AreEqual(GillImageDecision.Retrieve, r.ImageGroups[0].Decision);
        }
        Assert.AreEqual(1, generator.Calls);
        using (var r = model.Generate(Prompt(s_img1), O(GillDecisionMode.Auto, threshold: 1.5)))
            Assert.AreEqual(GillImageDecision.Generate, r.ImageGroups[0].Decision);
        Assert.AreEqual(2, generator.Calls);

        // A classifier trained to say "retrieve" for this state decides, and the generator is not called.
        float[] h;
        using (var r = model.Generate(Prompt(s_img1), O(GillDecisionMode.AlwaysRetrieve))) h = r.ImageGroups[0].ImgHiddenStates;
        using var classifier = new GillDecisionClassifier(GillDecisionKind.Released, 32, seed: 1);
        using (var x = torch.tensor(h.Take(32).ToArray(), new long[] { 1, 32 }))
        using (var y = torch.tensor(new long[] { 1 }))
            classifier.Train(x, y, options: new GillDecisionTrainingOptions { Steps = 60, LearningRate = 0.05 });
        using var withClassifier = new GillModel(core, model.Tokenizer, model.VisualEncoder, generator, classifier, gallery);
        using (var r = withClassifier.Generate(Prompt(s_img1), O(GillDecisionMode.Auto)))
        {
            Assert.AreEqual(GillDecisionSource.Classifier, r.ImageGroups[0].Source);
            Assert.AreEqual(GillImageDecision.Retrieve, r.ImageGroups[0].Decision);
            Assert.IsTrue(r.ImageGroups[0].RetrieveProbability > 0.5);
            Assert.AreEqual(1 - r.ImageGroups[0].RetrieveProbability, r.ImageGroups[0].GenerateProbability, 1e-9);
            Assert.AreEqual(0, r.GeneratorCalls);
        }
        Assert.AreEqual(2, generator.Calls);

        // Exclusion: the best hit is not returned again once it is marked as shown.
        string top;
        using (var r = model.Generate(Prompt(s_img1), O(GillDecisionMode.AlwaysRetrieve)))
            top = r.Parts.OfType<GillRetrievedImageOutput>().First().Id;
        var ex = O(GillDecisionMode.AlwaysRetrieve);
        ex.ExcludeGalleryIds = new[] { top };
        using (var r = model.Generate(Prompt(s_img1), ex))
            Assert.IsFalse(r.Parts.OfType<GillRetrievedImageOutput>().Any(p => p.Id == top));
        var shown = GillPrompt.Of(GillImageInput.FromFile(s_img1) with { GalleryId = top }, "a cat on the mat", GillImageInput.FromFile(s_img2), "then");
        using (var r = model.Generate(shown, O(GillDecisionMode.AlwaysRetrieve)))
            Assert.IsFalse(r.Parts.OfType<GillRetrievedImageOutput>().Any(p => p.Id == top), "an image shown in the prompt is not retrieved");
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void RetrievalAugmentedContextSkipsNearDuplicates()
    {
        string dir = InferenceTestKit.NewTempDir("memory");
        InferenceTestKit.WriteImage(dir, "m0.png", 200);
        File.Copy(Path.Combine(dir, "m0.png"), Path.Combine(dir, "m1.png")); // exact duplicate
        InferenceTestKit.WriteImage(dir, "m2.png", 202);
        InferenceTestKit.WriteImage(dir, "m3.png", 203);
        using var core = GillTestData.LoadStepModel();
        string indexPath = Path.Combine(dir, "memory.gidx");
        GillRetrievalIndexBuilder.BuildFromFolder(core, new GridVisualEncoder(), dir, indexPath);
        using var index = GillRetrievalIndex.Open(indexPath);
        var captions = new Dictionary<string, string> { ["m0.png"] = "a box", ["m1.png"] = "a box", ["m2.png"] = "a cat", ["m3.png"] = "the hat" };
        var memory = new GillContextMemory(index, captions, dir);
        using var model = new GillModel(core, InferenceTestKit.Tokenizer(), new GridVisualEncoder(), contextMemory: memory);
        var o = new GillGenerationOptions { MaxNewTokens = 2, ContextExamples = 3, StopAtEos = false };
        using var r = model.Generate(GillPrompt.Of("a cat"), o);
        var ids = model.LastContextIds;
        Assert.IsTrue(ids.Count >= 2, "examples were placed");
        Assert.IsFalse(ids.Contains("m0.png") && ids.Contains("m1.png"), "the duplicate pair is never both chosen");
        for (int i = 0; i < ids.Count; i++)
            for (int j = i + 1; j < ids.Count; j++)
            {
                using var vi = index.GetVector(index.FindId(ids[i]));
                using var vj = index.GetVector(index.FindId(ids[j]));
                Assert.IsTrue(torch.dot(vi, vj).item<float>() <= 0.9f);
            }
        using var plain = model.Generate(GillPrompt.Of("a cat"), new GillGenerationOptions { MaxNewTokens = 2, StopAtEos = false });
        Assert.IsTrue(r.PromptLength > plain.PromptLength, "the context examples precede the prompt");
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void BadInputGivesClearErrors()
    {
        using var model = InferenceTestKit.Model();
        Assert.ThrowsExactly<ArgumentException>(() => model.Generate(new GillPrompt(Array.Empty<GillPromptPart>())));
        Assert.ThrowsExactly<ArgumentException>(() => model.Generate(GillPrompt.Of("")));
        string bad = Path.Combine(s_dir, "bad.png");
        File.WriteAllText(bad, "not an image");
        var e = Assert.ThrowsExactly<InvalidDataException>(() => model.Generate(GillPrompt.Of(GillImageInput.FromFile(bad), "x")));
        StringAssert.Contains(e.Message, "bad.png");
        Assert.ThrowsExactly<FileNotFoundException>(() => model.Generate(GillPrompt.Of(GillImageInput.FromFile(Path.Combine(s_dir, "missing.png")))));
        var longText = string.Join(" ", Enumerable.Repeat("cat", 40));
        var le = Assert.ThrowsExactly<ArgumentException>(() => model.Generate(GillPrompt.Of(longText)));
        StringAssert.Contains(le.Message, "context");
        using var r = model.Generate(GillPrompt.Of(longText), new GillGenerationOptions { ContextOverflow = GillContextOverflow.TruncateLeft, MaxNewTokens = 4, StopAtEos = false });
        Assert.AreEqual(model.ContextLength - 1, r.PromptLength);
        Assert.AreEqual(1, r.TokenIds.Count, "only one position was left in the context");
        Assert.ThrowsExactly<ArgumentException>(() => model.Generate(GillPrompt.Of("x"), new GillGenerationOptions { TopP = 0.5 }));
        var noGallery = Forced(0, 2); noGallery.DecisionMode = GillDecisionMode.AlwaysRetrieve;
        Assert.ThrowsExactly<InvalidOperationException>(() => model.Generate(GillPrompt.Of("x"), noGallery));
    }

    [TestMethod]
    public void ImagesAsTensorsAndMLImagesMatchFiles()
    {
        using var model = InferenceTestKit.Model();
        using var t = Gill.ML.Generation.ImageTensorIO.Load(s_img1);
        using var a = model.Generate(Prompt(s_img1), Forced(0, 2));
        using var b = model.Generate(GillPrompt.Of(t, "a cat on the mat", GillImageInput.FromFile(s_img2), "then"), Forced(0, 2));
        using var ml = Gill.ML.Generation.ImageTensorIO.ToMLImage(t);
        using var c = model.Generate(GillPrompt.Of(ml, "a cat on the mat", GillImageInput.FromFile(s_img2), "then"), Forced(0, 2));
        CollectionAssert.AreEqual(a.ImageGroups[0].ImgHiddenStates, b.ImageGroups[0].ImgHiddenStates);
        CollectionAssert.AreEqual(a.ImageGroups[0].ImgHiddenStates, c.ImageGroups[0].ImgHiddenStates);
    }

    [TestMethod]
    public void RepeatedGenerationDoesNotLeakTensors()
    {
        using var model = InferenceTestKit.Model(generator: new CountingImageGenerator());
        void Once() { using var r = model.Generate(Prompt(s_img1), Forced(1, 3)); }
        for (int v = 0; v < 4; v++)
        {
            var o = Forced(1, 3); o.UseCache = v % 2 == 0; if (v >= 2) o.MaxImages = 0;
            long b0 = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            using (var r = model.Generate(Prompt(s_img1), o)) { }
            Assert.AreEqual(b0, DisposeScopeManager.Statistics.ThreadTotalLiveCount, $"variant {v}");
        }
        Once();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) Once();
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
