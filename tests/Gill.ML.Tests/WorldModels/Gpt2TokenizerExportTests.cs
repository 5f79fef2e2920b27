using Gill.ML.Tokenization;
using Gill.ML.World.Pretraining;

namespace Gill.ML.Tests.WorldModels;

[TestClass]
public sealed class Gpt2TokenizerExportTests
{
    [TestMethod]
    public void ExportedFilesTokenizeLikeTheDataPackage()
    {
        var dir = Path.Combine(Path.GetTempPath(), "gill-gpt2-export-" + Guid.NewGuid().ToString("N"));
        try
        {
            Gpt2TokenizerExport.Save(dir, addBosToken: false);
            Assert.AreEqual(50001, File.ReadAllLines(Path.Combine(dir, "merges.txt")).Length, "GPT-2 has 50000 merges plus the version line");
            var exported = GillTokenizer.FromFolder(dir);
            var package = GillTokenizer.Gpt2();
            Assert.AreEqual(50257, exported.BaseVocabularySize);
            foreach (var text in new[]
            {
                "a large red circle at the top left", "Q: what colour is it?\nA: it is purple.", "  leading spaces and  double  spaces",
                "Ünïcödé — dashes, 日本語, emoji 🙂 and <|endoftext|> inside", "antidisestablishmentarianism 1234567 $%^&*",
            })
                CollectionAssert.AreEqual(package.Encode(text), exported.Encode(text), text);
            Assert.AreEqual(50256, exported.EosTokenId);
            Assert.AreEqual(50256, exported.PadTokenId);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
