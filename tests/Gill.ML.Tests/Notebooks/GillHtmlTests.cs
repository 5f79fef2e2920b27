using System.Text.RegularExpressions;
using Gill.ML.Generation;
using Gill.ML.Inference;
using Gill.ML.Tests.Inference;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Notebooks;

/// <summary>HTML and plain-text rendering of GILL results and prompts (<see cref="GillHtml"/>, <c>ToHtml()</c>).</summary>
[TestClass]
public sealed class GillHtmlTests
{
    private const string UserText = "A <b>red</b> circle & \"square\" <script>alert('x')</script>";
    private static string s_dir = "";
    private static string s_png = "";

    [ClassInitialize]
    public static void Init(TestContext _)
    {
        s_dir = InferenceTestKit.NewTempDir("html");
        s_png = InferenceTestKit.WriteImage(s_dir, "gallery-7.png", 7);
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        try { Directory.Delete(s_dir, true); } catch (IOException) { }
    }

    internal static GillGenerationResult Result(string text, string retrievedId, GillImageDecision decision = GillImageDecision.Generate, double pRetrieve = 0.25)
    {
        var image = torch.linspace(0, 1, 3 * 6 * 5).view(3, 6, 5);
        var parts = new GillOutputPart[]
        {
            new GillTextOutput(text),
            new GillRetrievedImageOutput(0, 2, retrievedId, 0.81234f, 0),
            new GillRetrievedImageOutput(0, 5, "other.png", 0.5f, 1),
            new GillGeneratedImageOutput(0, 1337, image),
            new GillTextOutput(" and more"),
        };
        var groups = new[] { new GillImageGroup(0, 4, decision, pRetrieve, 1 - pRetrieve, 0.81234, GillDecisionSource.Classifier, new float[4], new float[2]) };
        var timings = new GillTimings(TimeSpan.FromMilliseconds(3.26), TimeSpan.FromMilliseconds(12), TimeSpan.FromMilliseconds(0.5), TimeSpan.FromMilliseconds(40), TimeSpan.FromMilliseconds(56));
        return new GillGenerationResult(parts, groups, new[] { 5, 6, 7, 100, 101 }, 17, timings, 1);
    }

    private static IReadOnlyList<string> DataUris(string html) =>
        Regex.Matches(html, "<img src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"").Select(m => m.Groups[1].Value).ToList();

    [TestMethod]
    public void ResultHtmlShowsTextImagesDecisionAndTimings()
    {
        using var r = Result(UserText, s_png);
        string html = r.ToHtml();
        StringAssert.StartsWith(html, "<div class=\"gill-result\"");
        StringAssert.Contains(html, "A &lt;b&gt;red&lt;/b&gt; circle &amp; &quot;square&quot; &lt;script&gt;");
        Assert.IsFalse(html.Contains("<script", StringComparison.OrdinalIgnoreCase), "user text is escaped");
        Assert.IsFalse(html.Contains("<b>red", StringComparison.Ordinal));
        Assert.IsTrue(html.IndexOf("circle", StringComparison.Ordinal) < html.IndexOf("gill-retrieved", StringComparison.Ordinal), "parts keep their order");
        Assert.IsTrue(html.IndexOf("gill-generated", StringComparison.Ordinal) < html.IndexOf(" and more", StringComparison.Ordinal));

        var uris = DataUris(html);
        Assert.AreEqual(2, uris.Count, "the retrieved file (rank 1) and the generated image are inline; rank 2 'other.png' does not exist");
        CollectionAssert.AreEqual(File.ReadAllBytes(s_png), Convert.FromBase64String(uris[0]), "the retrieved PNG is embedded as it is");
        var generated = (GillGeneratedImageOutput)r.Parts[3];
        CollectionAssert.AreEqual(generated.ToPng(), Convert.FromBase64String(uris[1]), "the generated image is embedded as PNG");
        using (var decoded = ImageTensorIO.FromEncodedBytes(Convert.FromBase64String(uris[1])))
            CollectionAssert.AreEqual(new long[] { 3, 6, 5 }, decoded.shape);

        StringAssert.Contains(html, GillHtml.Escape("retrieved · gallery-7.png · score 0.812 · rank 1"));
        StringAssert.Contains(html, $"title=\"{s_png}\"");
        StringAssert.Contains(html, GillHtml.Escape("generated · [IMG] group 0 · seed 1337"));
        StringAssert.Contains(html, "class=\"gill-missing\"");
        StringAssert.Contains(html, "not found in the gallery folder");

        StringAssert.Contains(html, "<table class=\"gill-decisions\"");
        StringAssert.Contains(html, ">generate</td>");
        StringAssert.Contains(html, "0.250</td>");
        StringAssert.Contains(html, "0.750</td>");
        StringAssert.Contains(html, "decision classifier");
        StringAssert.Contains(html, "visual encoding 3.3 ms, language model 12.0 ms, retrieval 0.5 ms, generation 40.0 ms, total 56.0 ms");
        StringAssert.Contains(html, "5 tokens generated after a 17-position prompt; 1 generator call(s)");
    }

    [TestMethod]
    public void OptionsResolveRelativeIdsAndHideSections()
    {
        using var r = Result("x", Path.GetFileName(s_png));
        Assert.AreEqual(1, DataUris(r.ToHtml(new GillHtmlOptions())).Count, "a relative id without a root does not resolve here");
        var rooted = r.ToHtml(new GillHtmlOptions { GalleryRoot = s_dir, ImageSize = 96, ShowDecisions = false, ShowTimings = false });
        Assert.AreEqual(2, DataUris(rooted).Count);
        StringAssert.Contains(rooted, "width=\"96\"");
        StringAssert.Contains(rooted, "width:48px", "lower-ranked retrievals are half size");
        Assert.IsFalse(rooted.Contains("gill-decisions", StringComparison.Ordinal));
        Assert.IsFalse(rooted.Contains("gill-timings", StringComparison.Ordinal));
        var resolved = r.ToHtml(new GillHtmlOptions { ResolveGalleryImage = id => id == "other.png" ? s_png : null });
        Assert.AreEqual(2, DataUris(resolved).Count, "the resolver replaces the root");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new GillHtmlOptions { ImageSize = 0 });
    }

    [TestMethod]
    public void HostileGalleryIdsAreEscapedAndDisposedImagesDoNotThrow()
    {
        var r = Result("t", "\"><img src=x onerror=alert(1)>.png");
        r.Dispose();
        string html = r.ToHtml();
        Assert.IsFalse(html.Contains("<img src=x", StringComparison.Ordinal));
        StringAssert.Contains(html, "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.png");
        StringAssert.Contains(html, "image disposed with its result");
        Assert.AreEqual(0, DataUris(html).Count);
        StringAssert.Contains(r.ToPlainText(), "disposed");
    }

    [TestMethod]
    public void PlainTextListsPartsDecisionsAndTimings()
    {
        using var r = Result("Here it is:", s_png, GillImageDecision.Retrieve, 0.9);
        var text = r.ToPlainText();
        StringAssert.StartsWith(text, "Here it is:[retrieved image: " + s_png + ", score 0.812, rank 1]");
        StringAssert.Contains(text, "[generated image 5×6, seed 1337] and more");
        StringAssert.Contains(text, "[IMG] group 0: retrieve (P(retrieve) 0.900, P(generate) 0.100; decision classifier; best retrieval score 0.812)");
        StringAssert.Contains(text, "total 56.0 ms");
        Assert.AreEqual("[generated image 5×6, seed 1337]", GillHtml.TryRenderPlainText(r.Parts[3], new GillHtmlOptions()));
        Assert.IsNull(GillHtml.TryRenderHtml("not a gill type", new GillHtmlOptions()));
    }

    [TestMethod]
    public void PromptHtmlShowsTextAndEveryKindOfImage()
    {
        using var tensor = torch.rand(3, 4, 4, generator: new Generator(3));
        var prompt = GillPrompt.Of(GillImageInput.FromFile(s_png), UserText, tensor,
            GillImageInput.FromEncodedBytes(File.ReadAllBytes(s_png)) with { GalleryId = "g<1>" }, GillImageInput.FromFile(Path.Combine(s_dir, "missing.png")), "Q: what?\nA:");
        var html = prompt.ToHtml();
        StringAssert.StartsWith(html, "<div class=\"gill-prompt\"");
        StringAssert.Contains(html, "A &lt;b&gt;red&lt;/b&gt;");
        Assert.IsFalse(html.Contains("<script", StringComparison.OrdinalIgnoreCase));
        var uris = DataUris(html);
        Assert.AreEqual(3, uris.Count, "file, tensor and bytes; the missing file is a placeholder");
        CollectionAssert.AreEqual(ImageTensorIO.ToPngBytes(tensor), Convert.FromBase64String(uris[1]));
        StringAssert.Contains(html, "g&lt;1&gt;");
        StringAssert.Contains(html, "class=\"gill-missing\"");
        Assert.AreEqual($"[image: {s_png}]{UserText}[image: image tensor][image: g<1>][image: {Path.Combine(s_dir, "missing.png")}]Q: what?\nA:", GillHtml.ToPlainText(prompt));
    }

    [TestMethod]
    public void ImageTagsAcceptOtherFormatsAndRejectNonImages()
    {
        using var t = torch.rand(3, 5, 7, generator: new Generator(1));
        StringAssert.StartsWith(GillHtml.ImageTag(t, "a \"tensor\"", 64), "<img src=\"data:image/png;base64,");
        StringAssert.Contains(GillHtml.ImageTag(t, "a \"tensor\""), "alt=\"a &quot;tensor&quot;\"");
        using var bmp = new SkiaSharp.SKBitmap(4, 4);
        using var img = SkiaSharp.SKImage.FromBitmap(bmp);
        using var jpeg = img.Encode(SkiaSharp.SKEncodedImageFormat.Jpeg, 90);
        StringAssert.StartsWith(GillHtml.ImageTag(jpeg.ToArray(), "j"), "<img src=\"data:image/jpeg;base64,");
        Assert.ThrowsExactly<InvalidDataException>(() => GillHtml.ImageTag(new byte[] { 1, 2, 3 }, "bad"));
    }

    [TestMethod]
    public void RealModelOutputRendersItsTextAndGeneratedImage()
    {
        GillTestThreads.Enter();
        try
        {
            var generator = new CountingImageGenerator();
            using var model = InferenceTestKit.Model(generator);
            using var r = model.Generate(GillPrompt.Of(GillImageInput.FromFile(s_png), "a cat <on> the mat"),
                new GillGenerationOptions { MaxNewTokens = 5, MinTokensBeforeImage = 1, ImageTokenScaleFactor = 1e5, StopAtEos = false });
            var html = r.ToHtml();
            Assert.AreEqual(1, r.ImageGroups.Count);
            foreach (var t in r.Parts.OfType<GillTextOutput>()) StringAssert.Contains(html, GillHtml.Escape(t.Text));
            Assert.AreEqual(1, DataUris(html).Count);
            StringAssert.Contains(html, ">generate</td>");
            StringAssert.Contains(html, "fixed mode");
            StringAssert.Contains(html, "seed 1337");
        }
        finally
        {
            GillTestThreads.Leave();
        }
    }
}
