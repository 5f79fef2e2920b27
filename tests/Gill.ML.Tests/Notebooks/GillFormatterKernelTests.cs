using Gill.ML.Inference;
using Microsoft.DotNet.Interactive.Commands;
using Microsoft.DotNet.Interactive.CSharp;
using Microsoft.DotNet.Interactive.Events;
using Microsoft.DotNet.Interactive.Formatting;

namespace Gill.ML.Tests.Notebooks;

/// <summary>
/// The GILL formatters are found by .NET Interactive through the library's own <c>TypeFormatterSourceAttribute</c>
/// (Gill.ML has no reference to Microsoft.DotNet.Interactive): displaying a result in a C# kernel gives text/html.
/// </summary>
[TestClass]
[TestCategory("Notebooks")]
public sealed class GillFormatterKernelTests
{
    private static string s_dir = "";
    private static string s_png = "";

    [ClassInitialize]
    public static void Init(TestContext _)
    {
        s_dir = Inference.InferenceTestKit.NewTempDir("formatter");
        s_png = Inference.InferenceTestKit.WriteImage(s_dir, "g.png", 4);
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        try { Directory.Delete(s_dir, true); } catch (IOException) { }
    }

    [TestMethod]
    public void LibraryDoesNotReferenceDotNetInteractive()
    {
        var refs = typeof(GillGenerationResult).Assembly.GetReferencedAssemblies().Select(a => a.Name ?? "").ToList();
        Assert.IsFalse(refs.Any(n => n.StartsWith("Microsoft.DotNet.Interactive", StringComparison.Ordinal)), string.Join(", ", refs));
    }

    [TestMethod]
    public void FormatterIsFoundByConventionForResultsPartsAndPrompts()
    {
        using var r = GillHtmlTests.Result("a <red> circle", s_png);
        Assert.AreEqual(r.ToHtml(), r.ToDisplayString(HtmlFormatter.MimeType));
        Assert.AreEqual(r.ToPlainText(), r.ToDisplayString(PlainTextFormatter.MimeType));
        CollectionAssert.Contains(Formatter.GetPreferredMimeTypesFor(typeof(GillGenerationResult)).ToList(), HtmlFormatter.MimeType);

        StringAssert.StartsWith(r.Parts[3].ToDisplayString(HtmlFormatter.MimeType), "<figure class=\"gill-generated\"");
        StringAssert.StartsWith(r.Parts[1].ToDisplayString(HtmlFormatter.MimeType), "<figure class=\"gill-retrieved\"");
        Assert.AreEqual("a <red> circle", r.Parts[0].ToDisplayString(PlainTextFormatter.MimeType));
        var prompt = GillPrompt.Of(GillImageInput.FromFile(s_png), "what is <this>?");
        Assert.AreEqual(prompt.ToHtml(), prompt.ToDisplayString(HtmlFormatter.MimeType));
    }

    [TestMethod]
    public async Task DisplayingAResultInTheCSharpKernelProducesHtml()
    {
        using var r = GillHtmlTests.Result("a <red> circle", s_png);
        using var kernel = new CSharpKernel();
        await Submit(kernel, NotebookTests.ReferenceCode());
        await Submit(kernel, "using Gill.ML.Inference;");
        await kernel.SetValueAsync("result", r, typeof(GillGenerationResult));

        // As the value of a cell.
        var events = await Submit(kernel, "result");
        var value = events.OfType<ReturnValueProduced>().Single();
        var html = value.FormattedValues.Single(f => f.MimeType == HtmlFormatter.MimeType).Value;
        StringAssert.StartsWith(html, "<div class=\"gill-result\"");
        StringAssert.Contains(html, "a &lt;red&gt; circle");
        StringAssert.Contains(html, "<img src=\"data:image/png;base64,");
        StringAssert.Contains(html, "0.750</td>");

        // Through display(...) of a part, as notebooks do.
        events = await Submit(kernel, "using static Microsoft.DotNet.Interactive.Kernel;\ndisplay(result.Parts[3]);");
        var shown = events.OfType<DisplayedValueProduced>().Single();
        StringAssert.StartsWith(shown.FormattedValues.Single(f => f.MimeType == HtmlFormatter.MimeType).Value, "<figure class=\"gill-generated\"");
    }

    private static async Task<IReadOnlyList<KernelEvent>> Submit(CSharpKernel kernel, string code)
    {
        var result = await kernel.SendAsync(new SubmitCode(code));
        var failures = NotebookTests.Failures(result.Events);
        if (failures.Count > 0) Assert.Fail($"{code}\n--- failed with:\n{string.Join("\n", failures)}");
        return result.Events;
    }
}
