using TorchSharp;
namespace Gill.ML.Tests;
[TestClass]
public class SmokeTests
{
    [TestMethod]
    public void TorchWorks()
    {
        using var t = torch.ones(2, 3);
        Assert.AreEqual(6f, t.sum().item<float>());
    }
}
